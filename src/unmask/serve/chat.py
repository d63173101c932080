"""Chat messages to one prompt: the model folder's chat template when it has one, else a plain template.

The plain template, for base models of code that were never tuned on conversations:

    ### System:
    {system message}

    ### User:
    {user message}

    ### Assistant:
    {assistant message}

    ### Assistant:
    <- the model continues here

Each message is a `### Role:` header line, its text, and a blank line; the prompt ends with an open
`### Assistant:` header. The answer stops at the next `\\n### ` header (PLAIN_STOP), which is added to
the request's stop strings. A folder's Jinja template (tokenizer_config.json's `chat_template`, or
chat_template.jinja) is rendered with `messages`, `add_generation_prompt=True` and the special tokens,
as transformers renders it.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnmaskError

PLAIN_STOP = "\n### "


def plain_prompt(messages: list[tuple[str, str]]) -> str:
    parts = [f"### {role.capitalize()}:\n{text}\n\n" for role, text in messages]
    return "".join(parts) + "### Assistant:\n"


def render(messages: list[tuple[str, str]], template: str | None, special: dict[str, str] | None = None
           ) -> tuple[str, tuple[str, ...]]:
    """(prompt, extra stop strings) for (role, text) messages."""
    if template is None:
        return plain_prompt(messages), (PLAIN_STOP,)
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise UnmaskError("this model's chat template needs jinja2: pip install 'unmask[serve]'") from None

    def raise_exception(message: str) -> Any:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        prompt = env.from_string(template).render(messages=[{"role": r, "content": t} for r, t in messages],
                                                  add_generation_prompt=True, **(special or {}))
    except TemplateError as e:
        raise UnmaskError(f"the model's chat template rejected these messages: {e}") from None
    return prompt, ()
