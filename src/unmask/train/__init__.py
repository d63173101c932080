"""Training: one loop for masked diffusion, block diffusion and the autoregressive twin.

    config.py         TrainConfig (TOML + --set overrides)
    objectives.py     the three losses behind one interface, with step-seeded noise
    loop.py           train(): AdamW, schedule, accumulation, validation, checkpoints, signals
    validation.py     validation loss and likelihood (bound or exact) on fixed windows
    checkpointing.py  atomic, resumable checkpoints in the model format plus training state
    distributed.py    torchrun process groups, DDP / FSDP2 wrapping, distributed checkpoints
    optim.py          AdamW parameter groups and the warm-up + cosine schedule
    progress.py       progress bar and JSON-lines log
    cli.py            `unmask train`

The public names below are imported on first use (unmask/lazy.py), so that `unmask --help` does not
import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {"TrainConfig": ".config", "load_config": ".config", "TrainResult": ".loop", "train": ".loop"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
