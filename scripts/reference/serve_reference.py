"""The search server a Python user would write instead of `idx serve` (scripts/bench-serve):
FastAPI + uvicorn, the reference PyTorch encoder loaded from idx's model.safetensors
(safetensors.torch.load_file + load_state_dict), Hugging Face tokenizers on idx's
tokenizer.json, and a FAISS IndexFlatIP over the same document vectors idx indexes
(idx index --dump-vectors). Cosine only: no BM25 half and no second pass, so it does less
work per query than idx's hybrid search.

Configured by the environment: IDX_REF_MODEL (models/<name>), IDX_REF_VECTORS (float32
rows), IDX_REF_TITLES (CSV with id,title,..., cycled when there are more vectors than rows).
Run: uvicorn --app-dir scripts/reference serve_reference:app --port 8090
"""
import csv
import os
import re

import faiss
import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer

from model import EncoderOnlyTransformer, config_from_metadata

torch.set_num_threads(1)  # one request, one core: concurrency comes from the thread pool
faiss.omp_set_num_threads(1)

model_dir = os.environ["IDX_REF_MODEL"]
with safe_open(f"{model_dir}/model.safetensors", framework="pt") as f:
    meta = f.metadata()
net = EncoderOnlyTransformer(**config_from_metadata(meta))
net.load_state_dict(load_file(f"{model_dir}/model.safetensors"))
net.eval()
max_tokens = int(meta.get("train_max_tokens", 32))
tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")

vectors = np.fromfile(os.environ["IDX_REF_VECTORS"], dtype=np.float32).reshape(-1, net.token_emb.embedding_dim)
faiss.normalize_L2(vectors)
index = faiss.IndexFlatIP(vectors.shape[1])
index.add(vectors)
with open(os.environ["IDX_REF_TITLES"], newline="") as f:
    rows = [(int(r["id"]), r["title"], r["genre"]) for r in csv.DictReader(f)]

_DROP = re.compile(r"[^A-Za-z0-9 .,:;!?'\-]")
app = FastAPI()


@app.get("/search")
def search(q: str, k: int = 10):
    text = _DROP.sub("", q.encode("ascii", "ignore").decode("ascii")).strip()
    ids = tokenizer.encode(text).ids[:max_tokens]
    if len(ids) <= 2:
        raise HTTPException(400, "nothing left after cleaning")
    with torch.inference_mode():
        h = net.encode(torch.tensor([ids]))
        q_vec = h.mean(dim=1).numpy().astype(np.float32)
    faiss.normalize_L2(q_vec)
    scores, found = index.search(q_vec, k)
    out = []
    for rank, (s, i) in enumerate(zip(scores[0], found[0])):
        doc_id, title, genre = rows[i % len(rows)]
        out.append({"rank": rank + 1, "score": float(s), "id": doc_id, "title": title, "genre": genre})
    return out
