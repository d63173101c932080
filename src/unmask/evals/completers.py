"""Where completions come from: a small interface the eval runner talks to, and its implementations.

- `UnmaskCompleter`: a local checkpoint, decoded by `unmask.sampling` (diffusion or autoregressive);
- `OpenAICompleter`: any OpenAI-compatible server's /v1/completions (unmask's own, vLLM, ...), through the
  official `openai` client (imported only when used), so the same harness scores another server.

A completer turns `CompletionRequest`s into `Completion`s and describes itself: `identity()` (which model:
path and weight hash, or URL and model name) and `settings()` (every decoding setting), both stored in the
results so that a number can always be traced to what produced it.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import UnmaskError


@dataclass
class CompletionRequest:
    prompt: str
    suffix: str | None = None  # infilling: the code after the gap
    stop: tuple[str, ...] = ()
    seed: int = 0
    infill_length: int | None = None  # infilling with oracle length: the gap's length in tokens


@dataclass
class Completion:
    text: str
    num_tokens: int  # tokens generated
    num_forwards: int | None  # model forward passes spent on it (None: the backend does not say)
    seconds: float
    infill_length: int | None = None  # diffusion infilling: the middle's length in tokens that was decoded


class Completer(Protocol):
    def identity(self) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` under the model's tokenizer (None when unknown: no oracle-length infilling)."""

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]: ...


def weights_sha256(folder: str | Path) -> dict[str, Any]:
    """The path of a checkpoint folder and the sha256 of its weight files (one digest over all shards)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for path in files:
        file_digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                file_digest.update(chunk)
        digest.update(path.name.encode() + b"\0" + file_digest.digest())
    if not files:
        raise UnmaskError(f"{folder}: no *.safetensors weight files to identify the model by")
    single = len(files) == 1
    return {"path": str(folder.resolve()), "weights": [p.name for p in files],
            "sha256": file_digest.hexdigest() if single else digest.hexdigest()}


class UnmaskCompleter:
    """Completions from a local checkpoint (or a bundled name), decoded by `unmask.sampling.generate`.

    `config` is the full SamplerConfig (the model's generation_config.json defaults with the user's
    overrides applied); each request only sets its own seed, stop strings and, for oracle-length
    infilling, the middle's length.
    """

    def __init__(self, model, config, *, device: str = "cpu", dtype=None, max_batch_size: int | None = None):
        """`model`: a folder, a bundled name, None (the bundled default) or an already loaded LoadedModel
        (a sweep decodes one model with many settings)."""
        from ..model.loading import LoadedModel, load_model

        self.lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
        if self.lm.tokenizer is None:
            raise UnmaskError(f"{self.lm.path}: no tokenizer.json, and evaluating needs one")
        self.config, self.device, self.dtype, self.max_batch_size = config, device, dtype, max_batch_size

    @functools.cached_property
    def context_length(self) -> int:
        """The window the model was trained on, when its folder records it (trainer_state.json of an
        `unmask train` checkpoint: its context_len, the longest window of the run and the runs it started
        from, else the run's own window), else its position limit: held-out examples must fit what it saw."""
        import json

        from ..train.checkpointing import recorded_context_len

        state = self.lm.path / "trainer_state.json" if self.lm.path is not None else None
        if state is not None and state.is_file():
            try:
                window = recorded_context_len(json.loads(state.read_text()))
                if window > 0:
                    return window
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass
        return self.lm.model.config.max_position_embeddings

    def identity(self) -> dict[str, Any]:
        cfg = self.lm.model.config
        return {"name": self.lm.name, **weights_sha256(self.lm.path), "attention": cfg.attention,
                "parameters": sum(p.numel() for p in self.lm.model.parameters())}

    def settings(self) -> dict[str, Any]:
        import dataclasses

        return {"backend": "unmask", **dataclasses.asdict(self.config), "device": str(self.device),
                "dtype": str(self.dtype or next(self.lm.model.parameters()).dtype)}

    def count_tokens(self, text: str) -> int | None:
        return len(self.lm.tokenizer.encode(text, add_special_tokens=False).ids)

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        from ..sampling import Request, generate

        batch = []
        for r in requests:
            prompt_ids, suffix_ids = self._fitted_ids(r)
            batch.append(Request(prompt=r.prompt, suffix=r.suffix, prompt_ids=prompt_ids, suffix_ids=suffix_ids,
                                 config=self.config.replace(seed=r.seed, stop=tuple(r.stop),
                                                            infill_length=r.infill_length)))
        start = time.perf_counter()
        results = generate(self.lm.model, self.lm.tokenizer, batch, self.config, max_batch_size=self.max_batch_size)
        # Requests decoded together share the wall time; each gets its share, so sums stay true.
        share = (time.perf_counter() - start) / len(requests)
        return [Completion(text=r.text, num_tokens=r.stats.tokens, num_forwards=r.stats.forward_passes,
                           seconds=share, infill_length=r.infill_length) for r in results]

    # An infill gap (a line, a few lines, a span) needs fewer new tokens than a completion: a long prefix +
    # suffix keeps room for this many (or max_new_tokens when smaller) before anything is cut.
    INFILL_MIN_BUDGET = 64

    def _fitted_ids(self, request: CompletionRequest) -> tuple[list[int] | None, list[int] | None]:
        """(prompt_ids, suffix_ids) cut to fit the model's context, or (None, None) to use the texts as they are.

        A completion prompt keeps its last tokens so that prompt + max_new_tokens fit (as an editor sends the
        window before the cursor); an infill keeps the last tokens of its prefix and the first of its suffix
        (each at least half of the room when it needs it) so that at least INFILL_MIN_BUDGET new tokens fit.
        The program scored is still the whole prompt + completion (+ suffix): only the model's view is cut."""
        from ..sampling.infill import healed_suffix

        cfg = self.lm.model.config
        encode = self.lm.tokenizer.encode
        prompt = encode(request.prompt, add_special_tokens=False).ids
        # The suffix the model sees: with suffix healing, without the newline that the middle gets (infill.py).
        seen = None if request.suffix is None else healed_suffix(request.suffix, self.config)[0]
        suffix = None if seen is None else encode(seen, add_special_tokens=False).ids
        fim_markers = 3 if suffix is not None and cfg.attention == "causal" else 0
        extra = (1 if cfg.bos_token_id is not None else 0) + fim_markers
        budget = self.config.max_new_tokens if suffix is None else min(self.config.max_new_tokens,
                                                                         self.INFILL_MIN_BUDGET)
        room = self.context_length - extra - budget
        if room <= 1 or len(prompt) + len(suffix or []) <= room:
            return None, None
        if suffix is None:
            return prompt[-room:], None
        keep_suffix = min(len(suffix), max(room // 2, room - len(prompt)))
        keep_prefix = room - keep_suffix
        return prompt[len(prompt) - keep_prefix:], suffix[:keep_suffix]


class OpenAICompleter:
    """Completions from an OpenAI-compatible server's /v1/completions."""

    MAX_STOP = 4  # OpenAI's limit; longer lists are cut by the runner after generation anyway

    def __init__(self, base_url: str, model: str, *, max_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, api_key: str | None = None, timeout_s: float = 600.0):
        try:
            from openai import OpenAI
        except ImportError:
            raise UnmaskError("--url needs the openai package: pip install openai") from None
        import os

        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url, self.model = base_url, model
        self.max_tokens, self.temperature, self.top_p = max_tokens, temperature, top_p
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=timeout_s, max_retries=2)

    def identity(self) -> dict[str, Any]:
        return {"url": self.base_url, "model": self.model}

    def settings(self) -> dict[str, Any]:
        return {"backend": "openai-compatible", "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p}

    def count_tokens(self, text: str) -> int | None:
        return None

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        out = []
        for r in requests:
            if r.infill_length is not None:
                raise UnmaskError("oracle-length infilling needs a local model; an OpenAI-compatible URL "
                                  "cannot be told the gap's length (use --infill-length unknown)")
            kwargs: dict[str, Any] = dict(model=self.model, prompt=r.prompt, max_tokens=self.max_tokens,
                                          temperature=self.temperature, top_p=self.top_p, seed=r.seed)
            if r.suffix is not None:
                kwargs["suffix"] = r.suffix
            if r.stop:
                kwargs["stop"] = list(r.stop[: self.MAX_STOP])
            start = time.perf_counter()
            try:
                response = self.client.completions.create(**kwargs)
            except Exception as e:  # the client raises its own hierarchy; say which server and why
                raise UnmaskError(f"{self.base_url}/completions failed: {type(e).__name__}: {e}") from None
            seconds = time.perf_counter() - start
            usage = response.usage
            extra = getattr(usage, "model_extra", None) or {}
            out.append(Completion(text=response.choices[0].text or "",
                                  num_tokens=int(usage.completion_tokens) if usage else 0,
                                  num_forwards=extra.get("forward_passes"), seconds=seconds))
        return out
