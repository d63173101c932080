"""unmask: train, sample, serve and benchmark diffusion language models of code.

The core (model, diffusion, sampling, training, eval) needs only torch, numpy, safetensors and
tokenizers; the server, plotting and HumanEval extras are imported inside the commands that use them.
"""

__version__ = "0.1.0"
