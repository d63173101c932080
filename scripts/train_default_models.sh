#!/usr/bin/env bash
# Train the bundled default model and its autoregressive twin on a 2-core CPU (issue #12), from the
# repository root, with data/shards4k built as configs/default-ar.toml says. Re-running continues an
# interrupted run from its newest checkpoint.
set -euo pipefail
export LD_PRELOAD=${LD_PRELOAD:-libjemalloc.so.2} MALLOC_CONF=${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # idle threads sleep: on a busy CPU spinning stalled training 10x
run() {  # run CONFIG OUT_DIR: fresh, or --resume when a checkpoint exists
  if [ -d "$2/model" ]; then echo "$2: done"; return; fi
  if ls -d "$2"/checkpoints/step-* >/dev/null 2>&1; then unmask train --config "$1" --resume "$2"
  else unmask train --config "$1"; fi
}
time run configs/default-ar.toml runs/default-ar
time run configs/default-diffusion.toml runs/default-diffusion
