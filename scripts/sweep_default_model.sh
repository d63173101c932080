#!/usr/bin/env bash
# The measured sweep behind the bundled default model (issue #12): candidate diffusion recipes at
# equal wall time on a 2-core CPU, each given the tokens its calibrated throughput covers in W
# seconds (bf16 autocast, 2 threads, jemalloc; measured 2026-11-24 with 30-step runs):
#   d256 L6 causal / bidirectional  10,700 tok/s      d256 L6 block diffusion (S=4)  4,400 tok/s
#   d192 L4                          21,600 tok/s      (steps of 4,096 tokens)
# Candidates (W = 480 s each; the autoregressive phase counts in a diffusion model's budget):
#   A  d256 L6 autoregressive twin (50% FIM), 1,250 steps; its step 625 starts B and C
#   B  A@625 -> masked diffusion, bidirectional, shifted logits, 625 steps
#   C  A@625 -> block diffusion, block 4, shifted logits, 257 steps (block training costs 2.4x)
#   D  d192 L4: autoregressive 1,270 steps of a 2,540-step schedule, then masked diffusion 1,270 steps
# Usage: scripts/sweep_default_model.sh [RUNS_DIR]   (data/shards4k from configs/default-ar.toml's commands)
set -euo pipefail
RUNS=${1:-runs/sweep}
SHARDS=${SHARDS:-data/shards4k}
export LD_PRELOAD=${LD_PRELOAD:-libjemalloc.so.2} MALLOC_CONF=${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}
train() { unmask train --config configs/default-ar.toml --set data.shards="$SHARDS" \
  --set system.progress=false --set optim.max_tokens=0 --set eval.every=0 --set checkpoint.keep=50 "$@"; }
small=(--set model.hidden_size=192 --set model.num_hidden_layers=4 --set model.num_attention_heads=3
       --set model.num_key_value_heads=3 --set model.intermediate_size=512)
step() { printf '%s/checkpoints/step-%08d' "$1" "$2"; }
adapt=(--set model.shift_logits=true --set optim.warmup_steps=50)

[ -d "$RUNS/A/model" ] || train --set out_dir="$RUNS/A" --set optim.max_steps=1250 --set checkpoint.every=625
[ -d "$RUNS/D-ar/checkpoints" ] || train "${small[@]}" --set out_dir="$RUNS/D-ar" --set optim.max_steps=2540 \
  --set checkpoint.every=1270 --set system.stop_at_step=1270
[ -d "$RUNS/B/model" ] || train --set objective=mdlm "${adapt[@]}" --set init_from="$(step "$RUNS/A" 625)" \
  --set out_dir="$RUNS/B" --set optim.max_steps=625
[ -d "$RUNS/C/model" ] || train --set objective=block --set model.block_size=4 "${adapt[@]}" \
  --set init_from="$(step "$RUNS/A" 625)" --set out_dir="$RUNS/C" --set optim.max_steps=257
[ -d "$RUNS/D/model" ] || train --set objective=mdlm "${small[@]}" "${adapt[@]}" \
  --set init_from="$(step "$RUNS/D-ar" 1270)" --set out_dir="$RUNS/D" --set optim.max_steps=1270
echo "sweep done: $RUNS"
