#!/usr/bin/env python3
"""Reference figure for `idx eval`'s genre kNN precision@k, with scikit-learn's TF-IDF.

Same definitions as idx eval: documents cleaned by idx's rules (non-ASCII dropped, only
A-Za-z0-9 and ` .,:;!?'-` kept, cut at the first " - ", dropped when 20 bytes or fewer
remain); the train CSV is the index, each validation document a query; precision@k is the
share of its k nearest train documents (cosine) with the same genre, averaged.

Usage: $IDX_PYTHON scripts/eval-reference.py TRAIN.csv VALIDATION.csv [k]
(IDX_PYTHON defaults to .venv-ref/bin/python; it needs pandas, numpy, scikit-learn.)
"""
import re
import sys
import time

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

KEEP = re.compile(r"[^A-Za-z0-9 .,:;!?'\-]")


def clean(text):
    t = KEEP.sub("", str(text).encode("ascii", "ignore").decode("ascii"))
    cut = t.find(" - ")
    if cut >= 0:
        t = t[:cut]
    return t if len(t) > 20 else None


def load(path):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["clean"] = df["description"].map(clean)
    return df[df["clean"].notna()].reset_index(drop=True)


def main():
    train_path, val_path = sys.argv[1], sys.argv[2]
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    t0 = time.time()
    train, val = load(train_path), load(val_path)
    vec = TfidfVectorizer()
    base = vec.fit_transform(train["clean"])      # rows are L2-normalised: dot = cosine
    queries = vec.transform(val["clean"])
    base_genre = train["genre"].to_numpy()
    hits = 0.0
    for s in range(0, queries.shape[0], 512):
        scores = (queries[s:s + 512] @ base.T).toarray()
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        for i, row in enumerate(top):
            hits += np.mean(base_genre[row] == val["genre"].iloc[s + i])
    p = hits / queries.shape[0]
    print(f"TF-IDF genre kNN precision@{k}: {p:.4f} ({queries.shape[0]} validation documents vs "
          f"{base.shape[0]} train documents, {time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
