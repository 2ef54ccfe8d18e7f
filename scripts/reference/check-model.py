#!/usr/bin/env python3
"""Checks an idx model folder against the reference PyTorch class: load_state_dict (strict)
into EncoderOnlyTransformer, then the mean-pooled embeddings of the corpus's first documents
must equal idx's `embed` to 1e-4.

  scripts/reference/check-model.py models/imdb-genres corpora/imdb-genres [--idx .build/release/idx] [--count 8]
"""
import argparse, os, subprocess, sys, tempfile
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import EncoderOnlyTransformer, config_from_metadata, read_safetensors, PAD, BOS, EOS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("corpus")
    ap.add_argument("--idx", default=".build/release/idx"); ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=32)
    a = ap.parse_args()
    weights, meta = read_safetensors(os.path.join(a.model, "model.safetensors"))
    model = EncoderOnlyTransformer(**config_from_metadata(meta))
    missing = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    print(f"load_state_dict: ok ({sum(p.numel() for p in model.parameters())} parameters, {missing})")
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "emb.safetensors")
        subprocess.run([a.idx, "train", "--out", a.model, "--corpus", a.corpus, "--export-embeddings", out,
                        "--export-count", str(a.count), "--max-len", str(a.max_len)], check=True)
        idx, _ = read_safetensors(out)
    n = idx["embeddings"].shape[0]
    seqs = []
    for d in range(n):
        ids = [int(x) for x in idx[f"document.{d}"]]
        s = [BOS] + ids[:a.max_len - 1]
        if len(s) < a.max_len: s.append(EOS)
        seqs.append(s)
    T = max(map(len, seqs))
    x = torch.full((n, T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs): x[i, :len(s)] = torch.tensor(s)
    with torch.no_grad():
        h = model.encode(x)
        keep = (x != PAD).unsqueeze(-1).float()
        pooled = ((h * keep).sum(1) / keep.sum(1)).numpy()
    err = float(np.abs(pooled - idx["embeddings"]).max())
    print(f"{n} documents (lengths {[len(s) for s in seqs]}): max abs error idx embed vs PyTorch {err:.3g}")
    if err > 1e-4:
        print("FAIL: above 1e-4"); sys.exit(1)
    print("OK: within 1e-4")


if __name__ == "__main__":
    main()
