#!/usr/bin/env bash
# Copy the trained default models into the package (src/unmask/assets/models/{default,default-ar}) with their
# sampler defaults in generation_config.json. Run from the repository root after scripts/train_default_models.sh
# (all four stages).
# Usage: scripts/ship_default_models.sh [default] [default-ar]   (both when none is named)
set -euo pipefail
ASSETS=src/unmask/assets/models
NAMES=" ${*:-default default-ar} "
ship() {  # ship RUN_MODEL_DIR NAME GENERATION_JSON
  [[ $NAMES == *" $2 "* ]] || return 0
  local dest="$ASSETS/$2" tmp="$ASSETS/.$2.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp "$1"/config.json "$1"/model.safetensors "$1"/tokenizer.json "$1"/trainer_state.json "$tmp"/
  printf '%s\n' "$3" > "$tmp/generation_config.json"
  rm -rf "$dest" && mv "$tmp" "$dest"
  du -sh "$dest"
}
# The shipped pair (MODEL_CARD.md): the diffusion model after self-distillation (configs/default-distill.toml) and
# the twin trained on for the same 5,017,600 tokens (stage 4 of scripts/train_default_models.sh).
# Diffusion defaults chosen on the sweep's model (8 HumanEval prompts, 128 tokens; MODEL_CARD.md): 16-token
# blocks with the dual cache matched one-token-per-step decoding most often and ran fastest. Since 2026-12-02 its
# lazy variant (no whole-canvas pass at a later block's start): the same `lines` scores, faster (MODEL_CARD.md).
ship runs/default-distill-v5/model default '{
  "mask_token_id": 1, "eos_token_id": 0, "pad_token_id": 2,
  "policy": "threshold", "threshold": 0.9, "block_length": 16, "cache": "dual-lazy", "max_new_tokens": 128
}'
ship runs/default-ar-plus5/model default-ar '{
  "mask_token_id": 1, "eos_token_id": 0, "pad_token_id": 2, "cache": "kv", "max_new_tokens": 128
}'
