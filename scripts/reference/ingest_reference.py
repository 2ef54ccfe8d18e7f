"""The reference ingest pipeline in Python: csv module + the cleaning rules +
Hugging Face tokenizers (WordLevel, Whitespace, [BOS] $A [EOS]). Shared by
scripts/compare-tokenizer.py and scripts/bench-ingest."""
import csv
import re

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
_DROP = re.compile(r"[^A-Za-z0-9 .,:;!?'\-]")


def clean(text):
    """Drop non-ASCII, keep A-Za-z0-9 and ` .,:;!?'-`, cut at the first " - ";
    None when 20 characters or fewer remain."""
    text = _DROP.sub("", text.encode("ascii", "ignore").decode("ascii"))
    cut = text.find(" - ")
    if cut >= 0:
        text = text[:cut]
    return text if len(text) > 20 else None


def read_documents(paths, deduplicate=False):
    """The cleaned descriptions; with deduplicate, a film (raw title-and-year and description)
    listed twice is kept once, at its first row, as idx ingest does by default."""
    docs, seen = [], set()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.DictReader(f):
                if deduplicate:
                    key = (row.get("movie title - year", ""), row["description"] or "")
                    if key in seen:
                        continue
                d = clean(row["description"] or "")
                if d is not None:
                    if deduplicate:
                        seen.add(key)
                    docs.append(d)
    return docs


def train(docs, vocab_size=2000, min_frequency=0, lowercase=False):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS)
    tok.train_from_iterator(docs, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return tok
