#!/usr/bin/env python3
"""PyTorch reference for `idx train`: the same model class, the same batches and masks
(SplitMix64 streams keyed by (seed, step, slot), exactly as idx draws them), AdamW with
PyTorch's defaults (weight_decay 0.01), clip_grad_norm_ 1.0, dropout 0.1, constant lr.
The LM head runs over every position and the loss ignores the unselected ones (the
notebook's way). Reads the corpus folder written by `idx ingest` (zstd token shards via
the zstd command-line tool).

  train.py CORPUS [--steps 5000] [--mask-mode mask-only] [--log log.csv] [--threads 2]
  train.py CORPUS --bench 300 --warmup 20      # ms/step, tokens/s (data prepared untimed)
"""
import argparse, json, os, struct, subprocess, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import EncoderOnlyTransformer, PAD, BOS, EOS, MASK

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, state): self.state = state & M64
    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)
    def next_double(self): return (self.next() >> 11) * 2.0 ** -53


def derive(parts):
    h = 0x243F6A8885A308D3
    for p in parts: h = SplitMix64(h ^ (p & M64)).next()
    return h


def read_corpus(folder):
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    docs = []
    for s in manifest["shards"]:
        raw = subprocess.run(["zstd", "-dcq", os.path.join(folder, s["tokens_file"])], check=True, capture_output=True).stdout
        assert raw[:8] == b"IDXTOKS1", "not an idx token shard"
        # Header (Sources/IdxCorpus/Shards.swift): magic | u32 id bytes | u32 0 | u64 docs | u64 tokens
        id_bytes, _, n, t = struct.unpack_from("<IIQQ", raw, 8)
        offsets = np.frombuffer(raw, "<u8", n + 1, 32).astype(np.int64)
        ids = np.frombuffer(raw, "<u2" if id_bytes == 2 else "<i4", t, 32 + 8 * (n + 1)).astype(np.int64)
        docs += [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(n)]
    vocab = len(json.load(open(os.path.join(folder, "tokenizer.json")))["model"]["vocab"])
    return docs, vocab


def make_batch(docs, vocab, step, args):
    """Input ids (B, T) padded, labels (B, T) with -100 where not selected: idx's Trainer.makeBatch."""
    seqs, labels = [], []
    for slot in range(args.batch):
        ids = docs[derive([args.seed, step, slot, 1]) % len(docs)]
        seq = [BOS] + ids[:args.max_len - 1]
        if len(seq) < args.max_len: seq.append(EOS)
        lab = [-100] * len(seq)
        inp = list(seq)
        g = SplitMix64(derive([args.seed, step, slot, 2]))
        for p, t in enumerate(seq):
            if t in (PAD, BOS, EOS): continue
            if g.next_double() >= 0.15: continue
            lab[p] = t
            if args.mask_mode == "mask-only": inp[p] = MASK
            else:
                r = g.next_double()
                if r < 0.8: inp[p] = MASK
                elif r < 0.9: inp[p] = 5 + g.next() % (vocab - 5)
        seqs.append(inp); labels.append(lab)
    T = max(map(len, seqs))
    x = torch.full((len(seqs), T), PAD, dtype=torch.long)
    y = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        x[i, :len(s)] = torch.tensor(s); y[i, :len(l)] = torch.tensor(l)
    return x, y, sum(map(len, seqs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--mask-mode", default="bert", choices=["bert", "mask-only"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", help="CSV of step,loss")
    ap.add_argument("--bench", type=int, help="time this many steps after --warmup")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--save", help="write the trained state_dict here (torch.save)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    docs, vocab = read_corpus(args.corpus)
    model = EncoderOnlyTransformer(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    model.train()

    def step_fn(x, y):
        logits = model(x)
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    if args.bench:
        batches = [make_batch(docs, vocab, s, args) for s in range(1, args.warmup + args.bench + 1)]
        for x, y, _ in batches[:args.warmup]: step_fn(x, y)
        t0 = time.perf_counter()
        for x, y, _ in batches[args.warmup:]: step_fn(x, y)
        secs = time.perf_counter() - t0
        tokens = sum(b[2] for b in batches[args.warmup:])
        print(json.dumps({"ms_per_step": 1000 * secs / args.bench, "tokens_per_s": tokens / secs, "steps": args.bench,
                          "tokens": tokens}))
        return

    losses, t0 = [], time.perf_counter()
    log = open(args.log, "w") if args.log else None
    if log: log.write("step,loss,elapsed_s\n")
    for step in range(1, args.steps + 1):
        x, y, _ = make_batch(docs, vocab, step, args)
        losses.append(step_fn(x, y))
        if log: log.write(f"{step},{losses[-1]:.6f},{time.perf_counter() - t0:.3f}\n")
        if step % 500 == 0:
            print(f"step {step}: mean loss of steps {step - 499}-{step}: {np.mean(losses[-500:]):.4f}  "
                  f"({1000 * (time.perf_counter() - t0) / step:.1f} ms/step)", flush=True)
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
