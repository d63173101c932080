"""The unmask transformer, its config, its key/value cache and its checkpoint format."""

from .checkpoint import CheckpointError, from_pretrained, load_config, load_generation_config, save_pretrained
from .config import ATTENTION_MODES, ModelConfig
from .kv_cache import KVCache
from .transformer import Transformer

__all__ = [
    "ATTENTION_MODES", "CheckpointError", "KVCache", "ModelConfig", "Transformer",
    "from_pretrained", "load_config", "load_generation_config", "save_pretrained",
]
