"""Python 3.10 has no tomllib: training configs are then read with its backport, tomli (a dependency
there). Checked here by hiding tomllib from a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_configs_read_with_tomli_when_tomllib_is_missing():
    pytest.importorskip("tomli")
    code = f"""
import sys
class NoTomllib:
    def find_spec(self, name, path=None, target=None):
        if name == 'tomllib':
            raise ImportError('no tomllib (as on Python 3.10)')
sys.meta_path.insert(0, NoTomllib())
from unmask.train.config import load_config, parse_override
config = load_config({str(CONFIGS / "tiny-cpu.toml")!r}, ["optim.lr=3e-4"])
assert config.optim.lr == 3e-4, config.optim.lr
assert parse_override("seed=5") == ("seed", 5)
assert 'tomli' in sys.modules and 'tomllib' not in sys.modules
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
