"""unmask.sampling: parallel decoding of diffusion models, the autoregressive baseline, infilling, streaming.

`generate(model, tokenizer, requests, config)` and `stream(...)` (generate.py) are the public API;
`BatchRunner` (runner.py) is one running batch that an engine steps, admitting and cancelling requests;
`DiffusionDecoder` and `ARDecoder` are the step-by-step decoders underneath it. The sampler's
command-line flags, shared by every command that decodes, are in cli_args.py.

The public names below are imported on first use (unmask/lazy.py), so that the command line's parser
can import `unmask.sampling.cli` without torch.
"""

import sys

from ..lazy import FunctionOverSubmodule, lazy_exports

_EXPORTS = {
    "ARDecoder": ".ar_decoder", "build_canvas": ".canvas", "SamplerConfig": ".config",
    "DiffusionDecoder": ".diffusion_decoder", "Request": ".generate", "Result": ".generate", "Stats": ".generate",
    "generate": ".generate", "stream": ".generate", "RowSettings": ".policies", "BatchRunner": ".runner",
    "make_decoder": ".runner", "plan_rows": ".runner", "Event": ".streaming",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(FunctionOverSubmodule):
    shadowed = ("generate",)  # the function generate.generate, not the module generate.py


sys.modules[__name__].__class__ = _Package
