"""`unmask ...` starts without importing torch: stage CLIs register with argparse alone, and the
packages they live in (unmask.sampling, unmask.train) import their heavy modules on first use."""

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_building_the_parser_imports_no_torch():
    loaded = _modules_after("import unmask.cli\nunmask.cli.build_parser()")
    assert "unmask.sampling.cli" in loaded and "unmask.train.cli" in loaded  # the stages did register
    heavy = {"torch", "numpy", "safetensors", "tokenizers"} & {m.split(".")[0] for m in loaded}
    assert not heavy


@pytest.mark.parametrize("argv", [["--help"], ["corpus", "build", "--help"], ["generate", "--help"],
                                  ["train", "--help"], ["eval", "--help"]])
def test_help_imports_no_torch(argv):
    loaded = _modules_after(f"import unmask.cli\ntry:\n    unmask.cli.main({argv!r})\nexcept SystemExit:\n    pass")
    assert "torch" not in loaded


def test_lazy_packages_give_the_same_objects():
    from unmask import sampling, train
    from unmask.sampling import generate as generate_function
    from unmask.sampling.generate import Request, generate
    from unmask.train.loop import train as train_function

    assert generate_function is generate and sampling.Request is Request and sampling.generate is generate
    assert train.train is train_function and "generate" in dir(sampling)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sampling.nonsense
