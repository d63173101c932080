"""Shared fixtures: tiny models that build in milliseconds on the CPU."""

import pytest
import torch

from unmask.model import ModelConfig, Transformer


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                  attention="bidirectional", mask_token_id=63, eos_token_id=1, pad_token_id=0)
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    model = Transformer(tiny_config(**overrides))
    model.init_weights(std=0.2, seed=seed)  # large weights: every visible key moves the output
    return model.eval()


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
