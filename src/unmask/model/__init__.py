"""The unmask transformer, its config, its key/value cache and its checkpoint format."""

from .checkpoint import CheckpointError, from_pretrained, load_config, load_generation_config, save_pretrained
from .config import ATTENTION_MODES, ModelConfig
from .kv_cache import KVCache
from .loading import BUNDLED_NAMES, LoadedModel, load_model, resolve_model_path
from .transformer import Transformer

__all__ = [
    "ATTENTION_MODES", "BUNDLED_NAMES", "CheckpointError", "LoadedModel", "KVCache", "ModelConfig", "Transformer",
    "from_pretrained", "load_config", "load_generation_config", "load_model", "resolve_model_path",
    "save_pretrained",
]
