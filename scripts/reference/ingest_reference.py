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


def read_documents(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.DictReader(f):
                d = clean(row["description"] or "")
                if d is not None:
                    docs.append(d)
    return docs


def train(docs, vocab_size=2000, min_frequency=0):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS)
    tok.train_from_iterator(docs, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return tok
