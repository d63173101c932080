#!/usr/bin/env bash
# Train the bundled default model and its autoregressive twin on a 2-core CPU (issue #12), from the
# repository root, with data/shards4k built as configs/default-ar.toml says. Re-running continues an
# interrupted run from its newest checkpoint.
#
# In stages, as the shipped models were trained (MODEL_CARD.md):
#   1. the configs as written: 10.24M tokens each (the twin; then the diffusion model from the twin's step 1250);
#   2., 3., ...: both continued with --resume to each budget of STAGES in turn (default 20.48M, then 30.72M
#      tokens each). Each raises optim.max_tokens, which re-stretches the cosine schedule over the new budget, so
#      the learning rate re-warms part of the way (to ~56 % / ~79 % of its peak in stage 2, less in stage 3) and
#      decays again.
# STAGES="" stops after stage 1. THREADS (default 2) is per run; stages 2 and 3 ran both runs at once, 1 thread each.
set -euo pipefail
export LD_PRELOAD=${LD_PRELOAD:-libjemalloc.so.2} MALLOC_CONF=${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # idle threads sleep: on a busy CPU spinning stalled training 10x
STAGES=${STAGES-20480000 30720000}
THREADS=${THREADS:-2}
tokens_of() {  # the total tokens of a run's exported model, 0 when there is none
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total_tokens'])" "$1/model/trainer_state.json" \
    2>/dev/null || echo 0
}
run() {  # run CONFIG OUT_DIR [MAX_TOKENS]: fresh, or --resume when a checkpoint exists
  local budget=${3:-} extra=(--set "system.threads=$THREADS")
  if [ -n "$budget" ]; then
    [ "$(tokens_of "$2")" -ge "$budget" ] && { echo "$2: done ($budget tokens)"; return; }
    extra+=(--set "optim.max_tokens=$budget")
  elif [ -d "$2/model" ]; then echo "$2: stage 1 done"; return; fi
  if ls -d "$2"/checkpoints/step-* >/dev/null 2>&1; then unmask train --config "$1" --resume "$2" "${extra[@]}"
  else unmask train --config "$1" "${extra[@]}"; fi
}
time run configs/default-ar.toml runs/default-ar
time run configs/default-diffusion.toml runs/default-diffusion
for budget in $STAGES; do
  time run configs/default-ar.toml runs/default-ar "$budget"
  time run configs/default-diffusion.toml runs/default-diffusion "$budget"
done
