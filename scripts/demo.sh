#!/usr/bin/env bash
# The whole product on the bundled sample (405 invented films), end to end:
# ingest -> train -> index -> search -> PCA and t-SNE of the seed-test
# sentences -> the eval table. Run scripts/setup.sh once first.
#
# Everything it writes goes to corpora/demo, models/demo, indexes/demo and
# runs/demo (all ignored by git); each run starts from scratch.
# DEMO_STEPS (default 1200) sets the training length.
set -euo pipefail
cd "$(dirname "$0")/.."

steps="${DEMO_STEPS:-1200}"
swift build -c release --product idx >&2
idx="$(swift build -c release --show-bin-path)/idx"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

rm -rf corpora/demo models/demo indexes/demo runs/demo
mkdir -p runs/demo

step "idx ingest: clean the sample, train the WordLevel tokenizer, write token shards"
"$idx" ingest corpora/sample/movies.csv --out corpora/demo

step "idx train: $steps steps of masked-language modelling"
"$idx" train --corpus corpora/demo --out models/demo --steps "$steps" --checkpoint-every "$steps"

step "idx index: embed every synopsis, write the int8 vector index"
"$idx" index --model models/demo --corpus corpora/demo --out indexes/demo

step "idx search \"alien robot\""
"$idx" search --index indexes/demo -k 5 "alien robot"

step "idx project: the 20 seed-test sentences (10 Sci-Fi, 10 Romance) in 2-D"
"$idx" project --model models/demo --texts corpora/seed-test.tsv --method pca \
    --out runs/demo/seed-pca.csv --svg runs/demo/seed-pca.svg
"$idx" project --model models/demo --texts corpora/seed-test.tsv --method tsne --perplexity 5 \
    --out runs/demo/seed-tsne.csv --svg runs/demo/seed-tsne.svg
echo "wrote runs/demo/seed-pca.{csv,svg} and runs/demo/seed-tsne.{csv,svg}" >&2

step "idx eval: MLM loss, seed-test separation, genre kNN precision@10"
"$idx" eval --index indexes/demo --seed-test corpora/seed-test.tsv
