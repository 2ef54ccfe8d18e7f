#!/usr/bin/env python3
"""Writes Tests/IdxCoreTests/Fixtures/ingest/tokenizer-reference.json: Hugging Face
WordLevelTrainer results (vocabulary in id order and the ids of every text) on small
synthetic texts with many count ties, for several vocab_size / min_frequency settings,
and HF's saved tokenizer.json for one of them. The tests check idx's trainer against it.

usage: IDX_PYTHON=.venv-ref/bin/python; $IDX_PYTHON scripts/reference/ingest_tokenizer_fixture.py"""
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_reference import train  # noqa: E402

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
rng = random.Random(7)
words = ["the", "a", "man", "Man", "MAN", "zoo", "Zoo", "apple", "b", "B", "42", "1999", "x2", "2x",
         "foo_bar", "don", "t", "s", "well", "ok", "aa", "ab", "ba", "Ab", "aB"]
puncts = [".", ",", "...", "?!", "'", "-", ":", ";", "!", "?", ".,", "--"]
texts = []
for _ in range(60):
    parts = []
    for _ in range(rng.randint(1, 14)):
        w = rng.choice(words)
        r = rng.random()
        if r < 0.25:
            w += rng.choice(puncts)
        elif r < 0.35:
            w += "'" + rng.choice(["s", "t", "re"])
        elif r < 0.4:
            w += "-" + rng.choice(words)
        parts.append(w)
    texts.append((" " * rng.randint(0, 2)).join(parts) if rng.random() < 0.2 else " ".join(parts))
texts += ["", "   ", "...", "a.b,c", "end-to-end, well-known; it's 3:30!", "tab\tand\nnewline  double"]

cases = []
# The last two: HF's Lowercase normalizer (idx ingest's default --case lower).
for vocab_size, min_frequency, lowercase in [(2000, 0, False), (12, 0, False), (20, 0, False), (2000, 2, False), (2000, 5, False),
                                             (30, 3, False), (2000, 0, True), (20, 0, True)]:
    tok = train(texts, vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase)
    vocab = tok.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    case = {"vocab_size": vocab_size, "min_frequency": min_frequency, "lowercase": lowercase, "vocab": by_id,
            "ids": [e.ids for e in tok.encode_batch(texts)]}
    if vocab_size == 20:
        with tempfile.TemporaryDirectory() as d:
            tok.save(os.path.join(d, "t.json"))
            case["tokenizer_json"] = open(os.path.join(d, "t.json")).read()
    cases.append(case)

out = os.path.join(root, "Tests", "IdxCoreTests", "Fixtures", "ingest", "tokenizer-reference.json")
with open(out, "w") as f:
    json.dump({"generator": "scripts/reference/ingest_tokenizer_fixture.py", "texts": texts, "cases": cases}, f)
print(f"wrote {out}: {len(texts)} texts, {len(cases)} cases")
