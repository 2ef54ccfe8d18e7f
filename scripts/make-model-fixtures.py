#!/usr/bin/env python3
"""Builds the PyTorch parity fixtures for idx's encoder (Tests/IdxCoreTests/Fixtures/model/).

Run with the reference interpreter:  .venv-ref/bin/python scripts/make-model-fixtures.py
The reference model (V=50, d=128, 4 heads, 3 layers, d_ff=256, max_len=64) gets weights from
the SplitMix64 rule below (idx's test regenerates the same floats, so weights need not be
stored); one padded batch runs with dropout off; saved: inputs, selected positions, targets,
logits at the selected positions, loss, the gradient of every parameter (sampled with a
fixed stride to keep the fixture small, plus each tensor's full gradient norm), the
mean-pooled embeddings, and the weights after one clipped AdamW step (same samples)."""
import json, os, sys
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from model import EncoderOnlyTransformer, write_safetensors, derive, uniform_doubles, PAD, BOS, EOS, MASK

V, D, H, L, F, MAXLEN = 50, 128, 4, 3, 256, 64
WEIGHT_SEED = 2024
MAX_NORM, LR = 0.05, 1e-3
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "IdxCoreTests", "Fixtures", "model")


def weight_rule(name, shape):
    """(base, amplitude): value = float32(base + (2u - 1) * amplitude). Mirrored in ParityTests.swift."""
    if name.startswith("token_emb") or name.startswith("pos_emb"):
        return 0.0, 1.0
    if ".norm" in name:
        return (1.0, 0.1) if name.endswith("weight") else (0.0, 0.1)
    if len(shape) == 2:
        return 0.0, 1.0 / np.sqrt(shape[1])
    return 0.0, 0.1


def sample_indices(n):
    return np.arange(0, n, max(1, n // 256))


def main():
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(V, D, H, L, F, MAXLEN, dropout=0.0)
    sd = model.state_dict()
    names = list(sd.keys())
    with torch.no_grad():
        for ti, name in enumerate(names):
            base, amp = weight_rule(name, list(sd[name].shape))
            u = uniform_doubles(derive([WEIGHT_SEED, ti]), sd[name].numel())
            vals = (base + (2.0 * u - 1.0) * amp).astype(np.float32)
            sd[name].copy_(torch.from_numpy(vals.reshape(sd[name].shape)))

    rng = np.random.default_rng(7)
    lengths = [20, 13, 7, 17]
    T = max(lengths)
    x = np.full((len(lengths), T), PAD, dtype=np.int64)
    selected, targets = [], []
    for b, n in enumerate(lengths):
        ids = [BOS] + list(rng.integers(5, V, n - 2)) + [EOS]
        x[b, :n] = ids
        for t in range(1, n - 1):
            if rng.random() < 0.3 or t == 1:
                selected.append(b * T + t); targets.append(x[b, t])
                r = rng.random()
                x[b, t] = MASK if r < 0.8 else (rng.integers(5, V) if r < 0.9 else x[b, t])
    xt = torch.from_numpy(x)
    sel = torch.tensor(selected)

    model.train()  # dropout is 0; train mode keeps PyTorch off its inference fast path
    logits = model(xt).reshape(-1, V)[sel]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets))
    loss.backward()

    with torch.no_grad():
        h = model.encode(xt)
        keep = (xt != PAD).unsqueeze(-1).float()
        pooled = (h * keep).sum(1) / keep.sum(1)

    tensors = {
        "input_ids": x.astype(np.float32), "lengths": np.array(lengths, np.float32),
        "selected": np.array(selected, np.float32), "targets": np.array(targets, np.float32),
        "logits": logits.detach().numpy(), "loss": np.array([loss.item()], np.float32),
        "pooled": pooled.numpy(),
    }
    grad_norms = []
    for name in names:
        p = dict(model.named_parameters())[name]
        g = p.grad.reshape(-1).numpy()
        tensors["grad." + name] = g[sample_indices(g.size)]
        grad_norms.append(float(np.linalg.norm(g.astype(np.float64))))
    total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    opt.step()
    for name in names:
        w = dict(model.named_parameters())[name].detach().reshape(-1).numpy()
        tensors["after." + name] = w[sample_indices(w.size)]
    tensors["grad_norms"] = np.array(grad_norms, np.float32)
    tensors["total_norm"] = np.array([total_norm], np.float32)

    os.makedirs(OUT, exist_ok=True)
    meta = dict(vocab_size=V, d_model=D, n_heads=H, n_layers=L, d_ff=F, max_len=MAXLEN, weight_seed=WEIGHT_SEED,
                max_norm=MAX_NORM, lr=LR, torch=torch.__version__, names=json.dumps(names))
    write_safetensors(os.path.join(OUT, "parity.safetensors"), tensors, meta)
    print(f"loss {loss.item():.6f}  total grad norm {total_norm:.4f} (clipped to {MAX_NORM})  "
          f"selected {len(selected)}  -> {OUT}/parity.safetensors")


if __name__ == "__main__":
    main()
