"""unmask.sampling: parallel decoding of diffusion models, the autoregressive baseline, infilling, streaming.

`generate(model, tokenizer, requests, config)` and `stream(...)` (generate.py) are the public API;
`DiffusionDecoder` and `ARDecoder` are the step-by-step decoders an engine can drive itself.
"""

from .ar_decoder import ARDecoder
from .canvas import build_canvas
from .config import SamplerConfig
from .diffusion_decoder import DiffusionDecoder
from .generate import Request, Result, Stats, generate, make_decoder, stream
from .policies import RowSettings
from .streaming import Event

__all__ = ["ARDecoder", "DiffusionDecoder", "Event", "Request", "Result", "RowSettings", "SamplerConfig", "Stats",
           "build_canvas", "generate", "make_decoder", "stream"]
