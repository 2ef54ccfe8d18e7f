"""The reference encoder: the notebook's EncoderOnlyTransformer, reconstructed so that its
state_dict names match idx's model.safetensors (load_state_dict works unchanged)."""
import torch
import torch.nn as nn

PAD, UNK, BOS, EOS, MASK = 0, 1, 2, 3, 4


class EncoderOnlyTransformer(nn.Module):
    def __init__(self, vocab_size, d_model=128, nhead=4, num_layers=3, dim_feedforward=256,
                 max_len=64, dropout=0.1):
        super().__init__()
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def encode(self, x):
        """Final hidden states (B, T, d) with the key-padding mask."""
        T = x.size(1)
        h = self.token_emb(x) + self.pos_emb(torch.arange(T, device=x.device))
        return self.encoder(h, src_key_padding_mask=(x == PAD))

    def forward(self, x):
        return self.lm_head(self.encode(x))


def config_from_metadata(meta):
    """EncoderOnlyTransformer kwargs from idx's model.safetensors __metadata__."""
    return dict(vocab_size=int(meta["vocab_size"]), d_model=int(meta["d_model"]), nhead=int(meta["n_heads"]),
                num_layers=int(meta["n_layers"]), dim_feedforward=int(meta["d_ff"]),
                max_len=int(meta["max_len"]), dropout=float(meta["dropout"]))


# --- safetensors (F32 only), written/read by hand so no extra package is needed ---
import json, struct
import numpy as np


def write_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name, arr in tensors.items():
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes()); offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", name
        b, en = e["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + b: 8 + n + en], dtype="<f4").reshape(e["shape"]).copy()
    return out, meta


# --- SplitMix64, the same generator idx uses (counter based, vectorised with numpy) ---
GAMMA = np.uint64(0x9E3779B97F4A7C15)
M64 = (1 << 64) - 1


def _mix(z):
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def splitmix_stream(state, count):
    """The first `count` outputs of SplitMix64(state).next()."""
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(np.uint64(state) + k * GAMMA)


def derive(parts):
    h = 0x243F6A8885A308D3
    for p in parts:
        h = int(_mix(np.uint64(((h ^ (p & M64)) + 0x9E3779B97F4A7C15) & M64)))
    return h


def uniform_doubles(state, count):
    return (splitmix_stream(state, count) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
