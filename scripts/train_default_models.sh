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
#   4. (below) the diffusion model self-distilled, the twin trained on for the same data tokens: the shipped pair.
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
  elif [ -d "$2/model" ]; then echo "$2: done"; return; fi
  if ls -d "$2"/checkpoints/step-* >/dev/null 2>&1; then unmask train --config "$1" --resume "$2" "${extra[@]}"
  else unmask train --config "$1" "${extra[@]}"; fi
}
time run configs/default-ar.toml runs/default-ar
time run configs/default-diffusion.toml runs/default-diffusion
for budget in $STAGES; do
  time run configs/default-ar.toml runs/default-ar "$budget"
  time run configs/default-diffusion.toml runs/default-diffusion "$budget"
done
# Stage 4, the shipped pair (MODEL_CARD.md): self-distillation of the stage-3 diffusion model
# (configs/default-distill.toml: certainty forcing on its own answers, the masked-diffusion loss kept on real
# code) so that its confidence threshold reveals several tokens per forward pass; and the twin trained on, as
# plain next-token training from its stage-3 checkpoint, for the distillation's 5,017,600 data tokens
# (30,720,000 + 5,017,600 = 35,737,600). Needs the stage-3 models (the default STAGES).
if [ "$(tokens_of runs/default-diffusion)" = 30720000 ] || [ -d runs/default-distill-v5/model ]; then
  teacher() {  # teacher OUT ARGS...: the stage-3 model's answers (written atomically; skipped when present)
    [ -f "$1/index.json" ] && return
    time unmask teacher --model runs/default-diffusion/model --shards data/shards4k --out "$1" \
      --prompt-len 128 --answer-len 64 --threads "$THREADS" "${@:2}" \
      --policy threshold --threshold 0.9 --block-size 16 --cache dual  # the sampler the default ships with
  }
  teacher data/teacher4k --prompts 1536 --val-prompts 64
  teacher data/teacher4k-v2 --prompts 2048 --val-prompts 0 --seed 1
  [ -f data/teacher4k-all/index.json ] || unmask corpus merge data/teacher4k data/teacher4k-v2 --out data/teacher4k-all
  time run configs/default-distill.toml runs/default-distill-v5
  if [ ! -d runs/default-ar-plus5/model ]; then  # the twin's stage-3 checkpoint, or its own newest one
    from=runs/default-ar/checkpoints/step-00007500
    ls -d runs/default-ar-plus5/checkpoints/step-* >/dev/null 2>&1 && from=runs/default-ar-plus5
    time unmask train --config configs/default-ar.toml --resume "$from" --set out_dir=runs/default-ar-plus5 \
      --set optim.max_tokens=35737600 --set "system.threads=$THREADS"
  fi
else
  echo "stage 4 skipped: runs/default-diffusion is not at its stage-3 budget of 30,720,000 tokens"
fi
