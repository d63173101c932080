#!/usr/bin/env bash
# Every figure of the bundled models' card (src/unmask/assets/models/MODEL_CARD.md), from the repository
# root with data/ built as configs/default-ar.toml says: one `unmask eval` / `unmask bench` run each,
# results under runs/card/. Re-running resumes interrupted evaluations.
set -euo pipefail
OUT=${1:-runs/card}
for m in ${MODELS:-default default-ar}; do   # MODELS=default-ar evaluates one; BENCH=0 skips the bench
  unmask eval likelihood --model "$m" --shards data/shards4k --split val --windows 256 --mc-samples 8 \
    --out "$OUT/$m/likelihood.json" --no-progress
  if [ "$m" = default ]; then  # the diffusion model's bound decoded block by block as its sampler does (16-token
    # blocks: 16 passes per sample), and its exact likelihood decoded left to right (255 passes per window)
    unmask eval likelihood --model "$m" --shards data/shards4k --split val --windows 256 --mc-samples 4 \
      --likelihood-order blocks --out "$OUT/$m/likelihood-blocks.json" --no-progress
    unmask eval likelihood --model "$m" --shards data/shards4k --split val --windows 64 \
      --likelihood-order left-to-right --out "$OUT/$m/likelihood-l2r.json" --no-progress
  fi
  unmask eval lines --model "$m" --corpus data/corpus --limit 300 --seed 0 --out "$OUT/$m/lines.json" --no-progress
  unmask eval humaneval --model "$m" --n-samples 1 --k 1 --out "$OUT/$m/humaneval.json" --no-progress
  unmask eval infill-single --model "$m" --limit 200 --out "$OUT/$m/infill-single.json" --no-progress
done
for t in lines infill-single; do  # paired sign tests, once both models' results exist
  if [ -f "$OUT/default/$t.json" ] && [ -f "$OUT/default-ar/$t.json" ]; then
    unmask eval compare "$OUT/default/$t.json" "$OUT/default-ar/$t.json" --out "$OUT/compare-$t.json"
  fi
done
# The bench alone on a quiet machine, with OpenMP's own wait policy (a PASSIVE one, which training uses on a
# shared CPU, slows small decode steps 1.3-1.6x); 32 prompts: 8 were too few to tell the two models apart.
# Batch 1 in 5 rounds (the twin's tokens/s drifts most on a shared VM), batch 8 in 2.
if [ "${BENCH:-1}" != 0 ]; then
  for b in "1 5" "8 2"; do
    set -- $b
    env -u OMP_WAIT_POLICY unmask bench --model default --ar-model default-ar --prompts humaneval --limit 32 \
      --max-new-tokens 128 --batch-sizes "$1" --repeats "$2" --warmup 1 --out "$OUT/bench-b$1" --no-progress
  done
fi
