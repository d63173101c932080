"""The sweep: grid parsing, the Pareto frontier, the Markdown table and the plot."""

import json

import pytest

from unmask.errors import UnmaskError
from unmask.evals.sweep import AR_TWIN, markdown_table, pareto_front, parse_grid, run_sweep

TYPES = {"threshold": 0.9, "block_length": 32, "policy": "threshold", "steps_per_block": None}


def test_grid_is_the_cartesian_product_with_typed_values():
    points = parse_grid(["threshold=0.5,0.9", "block-length=8,32", "steps_per_block=none,4"], TYPES)
    assert len(points) == 8
    assert points[0] == {"threshold": 0.5, "block_length": 8, "steps_per_block": None}
    assert points[-1] == {"threshold": 0.9, "block_length": 32, "steps_per_block": 4}
    assert parse_grid([], TYPES) == [{}]


@pytest.mark.parametrize("spec, message", [("temperature=0.5", "not a sampler setting"), ("threshold", "NAME=V1"),
                                           ("block_length=eight", "cannot read")])
def test_bad_grids_are_explained(spec, message):
    with pytest.raises(UnmaskError, match=message):
        parse_grid([spec], TYPES)


def _rows():
    return [{"name": "a", "pass@1": 0.5, "tokens_per_second": 10.0, "tokens_per_forward": 1.0},
            {"name": "b", "pass@1": 0.4, "tokens_per_second": 20.0, "tokens_per_forward": 2.0},
            {"name": "c", "pass@1": 0.3, "tokens_per_second": 15.0, "tokens_per_forward": 3.0},  # beaten by b on speed
            {"name": "d", "pass@1": 0.5, "tokens_per_second": 5.0, "tokens_per_forward": 0.5}]  # beaten by a


def test_pareto_front():
    assert pareto_front(_rows(), "tokens_per_second") == ["a", "b"]
    assert pareto_front(_rows(), "tokens_per_forward") == ["a", "b", "c"]


def test_markdown_table_lists_every_point():
    table = markdown_table([{**r, "compile_rate": 1.0, "on_frontier": r["name"] == "a"} for r in _rows()])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| a | 0.500 |") and lines[2].endswith("| yes |")


def test_run_sweep_writes_table_plot_and_summary(tmp_path):
    speeds = {0.5: 30.0, 0.9: 12.0}

    def fake(overrides, path):
        t = overrides["threshold"]
        return {"metrics": {"pass@1": t / 2, "compile_rate": 1.0},
                "speed": {"tokens_per_second": speeds[t], "tokens_per_forward": 40 / speeds[t]}}

    def fake_ar(path):
        return {"metrics": {"pass@1": 0.2, "compile_rate": 1.0},
                "speed": {"tokens_per_second": 20.0, "tokens_per_forward": 1.0}}

    rows = run_sweep(parse_grid(["threshold=0.5,0.9"], TYPES), fake, tmp_path / "sw", evaluate_ar=fake_ar,
                     log=lambda *a: None)
    assert [r["name"] for r in rows] == ["threshold=0.5", "threshold=0.9", AR_TWIN]
    assert [r["on_frontier"] for r in rows] == [True, True, False]
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert summary["frontier_tokens_per_second"] == ["threshold=0.5", "threshold=0.9"]
    assert "| ar-twin |" in (tmp_path / "sw" / "frontier.md").read_text()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "sw" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
