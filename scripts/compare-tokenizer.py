#!/usr/bin/env python3
"""Checks idx's tokenizer and token shards against Hugging Face tokenizers.

usage: scripts/compare-tokenizer.py CORPUS_DIR CSV... [--vocab-size N]

Loads CORPUS_DIR/tokenizer.json with tokenizers.Tokenizer.from_file, trains HF's own
WordLevel on the same cleaned texts (the reference cleaning of the CSVs, in Python),
and checks: the vocabularies are identical (ids included), idx's cleaned descriptions
(metadata shards) equal the reference's, and for every document the ids in idx's
token shards equal HF's encode() of the text, with [BOS]/[EOS] from the template.
Needs the `zstd` command to read the shards. Exits non-zero on any difference."""
import json
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from ingest_reference import read_documents, train  # noqa: E402


def unzstd(path):
    return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout


def main():
    args = sys.argv[1:]
    vocab_size = None   # default: the corpus's own (its manifest)
    if "--vocab-size" in args:
        i = args.index("--vocab-size")
        vocab_size = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    corpus, csvs = args[0], args[1:]
    from tokenizers import Tokenizer

    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    idx_tok = Tokenizer.from_file(os.path.join(corpus, "tokenizer.json"))
    if vocab_size is None:
        vocab_size = manifest["vocab_size"]

    t0 = time.time()
    deduplicate = manifest.get("stats", {}).get("duplicate_rows") is not None
    lowercase = (json.load(open(os.path.join(corpus, "tokenizer.json"))).get("normalizer") or {}).get("type") == "Lowercase"
    docs = read_documents(csvs, deduplicate=deduplicate)
    print(f"reference: films listed twice kept once: {deduplicate}; Lowercase normalizer: {lowercase}")
    hf_tok = train(docs, vocab_size=vocab_size, lowercase=lowercase)
    t_train = time.time() - t0

    failures = 0
    idx_vocab, hf_vocab = idx_tok.get_vocab(), hf_tok.get_vocab()
    same_vocab = idx_vocab == hf_vocab
    print(f"vocabulary: idx {len(idx_vocab)} entries, HF {len(hf_vocab)} entries, identical (words and ids): {same_vocab}")
    if not same_vocab:
        failures += 1
        inv_i = {v: k for k, v in idx_vocab.items()}
        inv_h = {v: k for k, v in hf_vocab.items()}
        diff = [i for i in range(max(len(inv_i), len(inv_h))) if inv_i.get(i) != inv_h.get(i)]
        print(f"  first differing ids: {[(i, inv_i.get(i), inv_h.get(i)) for i in diff[:10]]}")

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        hf_tok.save(os.path.join(d, "tokenizer.json"))
        same_bytes = open(os.path.join(d, "tokenizer.json"), "rb").read() == open(os.path.join(corpus, "tokenizer.json"), "rb").read()
    print(f"tokenizer.json byte-identical to HF's Tokenizer.save: {same_bytes}")
    if not same_bytes:
        failures += 1

    # idx's documents: metadata (cleaned descriptions) and token shards.
    descriptions, idx_docs = [], []
    for shard in manifest["shards"]:
        for line in unzstd(os.path.join(corpus, shard["metadata_file"])).splitlines():
            descriptions.append(json.loads(line)["description"])
        raw = unzstd(os.path.join(corpus, shard["tokens_file"]))
        assert raw[:8] == b"IDXTOKS1", shard["tokens_file"]
        width, _, ndocs, ntoks = struct.unpack_from("<IIQQ", raw, 8)
        offsets = struct.unpack_from(f"<{ndocs + 1}Q", raw, 32)
        ids = struct.unpack_from(f"<{ntoks}{'H' if width == 2 else 'i'}", raw, 32 + 8 * (ndocs + 1))
        idx_docs += [list(ids[offsets[i]:offsets[i + 1]]) for i in range(ndocs)]
    print(f"documents: idx {len(idx_docs)}, reference cleaning {len(docs)}")
    if len(idx_docs) != len(docs):
        failures += 1
    same_text = sum(1 for a, b in zip(descriptions, docs) if a == b)
    print(f"cleaned texts identical: {same_text} / {len(docs)}")
    if same_text != len(docs):
        failures += 1

    t0 = time.time()
    encodings = hf_tok.encode_batch(docs)
    t_enc = time.time() - t0
    idx_encodings = idx_tok.encode_batch(docs)
    same_ids = same_idx_file = tokens = unk = 0
    first_bad = None
    for i, (e, ie) in enumerate(zip(encodings, idx_encodings)):
        mine = [2] + idx_docs[i] + [3] if i < len(idx_docs) else None
        tokens += len(e.ids) - 2
        unk += sum(1 for t in e.ids if t == 1)
        if mine == e.ids:
            same_ids += 1
        elif first_bad is None:
            first_bad = (i, docs[i][:80], mine[:20] if mine else None, e.ids[:20])
        if ie.ids == e.ids:
            same_idx_file += 1
    print(f"ids identical for every document ([BOS] text [EOS]), idx shards vs HF: {same_ids} / {len(docs)}")
    print(f"ids identical, HF loading idx's tokenizer.json vs HF's own: {same_idx_file} / {len(docs)}")
    print(f"tokens (without specials): {tokens}, idx manifest {manifest['tokens']}; UNK rate {100 * unk / max(tokens, 1):.2f}%")
    print(f"tokenizer hash (manifest) {manifest['tokenizer_hash']}; HF clean+train {t_train:.2f} s, encode_batch {t_enc:.2f} s")
    if first_bad:
        print(f"  first differing document: {first_bad}")
    if same_ids != len(docs) or same_idx_file != len(docs) or tokens != manifest["tokens"]:
        failures += 1
    print("RESULT:", "identical" if failures == 0 else f"{failures} check(s) FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
