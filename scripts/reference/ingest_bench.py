"""Reference pipeline for scripts/bench-ingest: csv module + the cleaning rules +
tokenizers train_from_iterator + encode_batch ([BOS] text [EOS]). Prints counts."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_reference import read_documents, train  # noqa: E402

t0 = time.time()
docs = read_documents(sys.argv[1:])
t1 = time.time()
tok = train(docs)
t2 = time.time()
enc = tok.encode_batch(docs)
tokens = sum(len(e.ids) - 2 for e in enc)
t3 = time.time()
print(f"python: {len(docs)} documents, {tokens} tokens; read+clean {t1 - t0:.2f} s, train {t2 - t1:.2f} s, encode {t3 - t2:.2f} s",
      file=sys.stderr)
