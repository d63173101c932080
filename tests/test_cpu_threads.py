"""CPU thread choice: idle cores from /proc/stat, --threads, OMP_NUM_THREADS, and restoring torch's setting."""

import pytest
import torch

from unmask import cpu_threads
from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.model import save_pretrained

from sampling_helpers import byte_tokenizer, random_lm


def _stat(rows: dict[str, tuple[int, int]]) -> str:
    # /proc/stat lines: name user nice system idle iowait irq softirq steal; busy time goes in user
    return "".join(f"{name} {busy} 0 0 {idle} 0 0 0 0 0 0\n" for name, (busy, idle) in rows.items())


def test_busy_cores_counts_only_this_process_cpus(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(_stat({"cpu": (0, 0), "cpu0": (100, 100), "cpu1": (100, 100), "cpu2": (100, 100)}))
    # over the interval: cpu0 busy throughout, cpu1 a quarter busy, cpu2 (not ours) busy throughout
    later = _stat({"cpu": (0, 0), "cpu0": (200, 100), "cpu1": (125, 175), "cpu2": (200, 100)})
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda s: stat.write_text(later))
    assert cpu_threads.busy_cores({0, 1}, stat_path=str(stat)) == pytest.approx(1.25)


def test_busy_cores_unknown_without_proc_stat(tmp_path):
    assert cpu_threads.busy_cores({0}, interval=0, stat_path=str(tmp_path / "missing")) is None


@pytest.mark.parametrize("default, usable, busy, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.4, 2), (2, 2, 0.6, 1), (2, 2, 1.0, 1), (2, 2, 2.0, 1),
    (4, 8, 3.0, 4), (4, 8, 5.0, 3), (8, 8, 7.9, 1), (2, 2, None, 2),
])
def test_auto_threads(default, usable, busy, expected):
    assert cpu_threads.auto_threads(default, usable, busy) == expected


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield before
    cpu_threads.restore_threads()
    torch.set_num_threads(before)


@pytest.mark.parametrize("busy, expected", [(1.0, 1), (0.1, 2)])
def test_busy_cores_are_left_out_and_the_note_says_why(monkeypatch, threads_restored, busy, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpu_threads, "busy_cores", lambda cpus: busy)
    notes = []
    assert cpu_threads.use_threads(0, "cpu", note=notes.append) == expected == torch.get_num_threads()
    if expected < 2:
        assert len(notes) == 1 and "1.0 of 2 CPU cores are busy" in notes[0] and "--threads" in notes[0]
    else:
        assert not notes
    cpu_threads.restore_threads()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("env, device", [("2", "cpu"), (None, "cuda")])
def test_user_choice_and_gpu_runs_are_left_alone(monkeypatch, threads_restored, env, device):
    if env:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    else:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu_threads, "busy_cores", lambda cpus: 2.0)
    assert cpu_threads.use_threads(0, device) == 2


def test_the_cores_are_looked_at_once_per_command(monkeypatch, threads_restored):
    # eval loads a model and its twin, sweep one completer per grid point: one look, one count
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    looks = []
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpu_threads, "busy_cores", lambda cpus: looks.append(1) or 1.0)
    assert [cpu_threads.use_threads(0, "cpu", note=print) for _ in range(3)] == [1, 1, 1] and len(looks) == 1
    cpu_threads.restore_threads()
    assert cpu_threads.use_threads(0, "cpu", note=print) == 1 and len(looks) == 2


def test_explicit_count_wins_and_bad_counts_error(monkeypatch, threads_restored):
    monkeypatch.setattr(cpu_threads, "busy_cores", lambda cpus: pytest.fail("an explicit count measures nothing"))
    assert cpu_threads.use_threads(1, "cpu") == 1 and torch.get_num_threads() == 1
    with pytest.raises(UnmaskError, match="--threads -1"):
        cpu_threads.use_threads(-1, "cpu")


def test_command_restores_torch_threads(tmp_path, capsys, threads_restored):
    save_pretrained(random_lm(), tmp_path / "m", tokenizer=byte_tokenizer())
    torch.set_num_threads(2)
    model = ["--model", str(tmp_path / "m")]
    assert main(["generate", "def f(x):", *model, "--max-new-tokens", "4", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 2
    assert main(["generate", "def f(x):", *model, "--threads", "-1"]) == 2
    assert "--threads -1" in capsys.readouterr().err
