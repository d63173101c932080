"""unmask.sampling: parallel decoding of diffusion models, the autoregressive baseline, infilling, streaming.

`generate(model, tokenizer, requests, config)` and `stream(...)` (generate.py) are the public API;
`BatchRunner` (runner.py) is one running batch that an engine steps, admitting and cancelling requests;
`DiffusionDecoder` and `ARDecoder` are the step-by-step decoders underneath it.
"""

from .ar_decoder import ARDecoder
from .canvas import build_canvas
from .config import SamplerConfig
from .diffusion_decoder import DiffusionDecoder
from .generate import Request, Result, Stats, generate, stream
from .policies import RowSettings
from .runner import BatchRunner, make_decoder, plan_rows
from .streaming import Event

__all__ = ["ARDecoder", "BatchRunner", "DiffusionDecoder", "Event", "Request", "Result", "RowSettings", "SamplerConfig",
           "Stats", "build_canvas", "generate", "make_decoder", "plan_rows", "stream"]
