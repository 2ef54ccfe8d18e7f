"""The seed test in PyTorch: the ratio of mean inter- to intra-cluster cosine distance of the
seed-test sentences, mean-pooled over [BOS] text [EOS] by the reference model, so that idx's
`idx eval` figure can be compared with PyTorch's on the very same sentences.

  seed-ratio.py MODEL TOKENIZER_JSON [SEED_TSV]
MODEL is a torch.save'd state_dict (scripts/reference/train.py --save) or an idx model.safetensors.
"""
import re, sys
import torch
from tokenizers import Tokenizer
sys.path.insert(0, __import__("os").path.dirname(__file__))
from model import EncoderOnlyTransformer, read_safetensors, PAD


def clean(text):
    # The reference cleaning, without the length rule (as idx's query path does).
    text = text.encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9 .,:;!?'\-]", "", text)
    return text.split(" - ")[0]


def main():
    model_path, tok_path = sys.argv[1], sys.argv[2]
    seed_path = sys.argv[3] if len(sys.argv) > 3 else "corpora/seed-test.tsv"
    if model_path.endswith(".safetensors"):
        state = {k: torch.from_numpy(v) for k, v in read_safetensors(model_path)[0].items()}
    else:
        state = torch.load(model_path)
    model = EncoderOnlyTransformer(state["token_emb.weight"].shape[0])
    model.load_state_dict(state)
    model.eval()
    tok = Tokenizer.from_file(tok_path)
    texts, labels = [], []
    for line in open(seed_path):
        t, l = line.rstrip("\n").split("\t")
        texts.append(t); labels.append(l)
    vecs = []
    with torch.no_grad():
        for t in texts:
            ids = tok.encode(clean(t)).ids[:32]
            x = torch.tensor([ids])
            h = model.encode(x)[0]
            vecs.append(h.mean(0))
    v = torch.nn.functional.normalize(torch.stack(vecs), dim=1)
    d = 1 - v @ v.T
    intra, inter = [], []
    for i in range(len(texts)):
        for j in range(len(texts)):
            if i == j: continue
            (intra if labels[i] == labels[j] else inter).append(d[i, j].item())
    a, b = sum(intra) / len(intra), sum(inter) / len(inter)
    print(f"intra {a:.4f}  inter {b:.4f}  ratio {b / a:.4f}")


if __name__ == "__main__":
    main()
