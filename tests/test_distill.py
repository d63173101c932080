"""Self-distillation: `unmask teacher` writes a model's own answers as shards, and objective "distill"
(dParallel-style certainty forcing) trains the model on them one answer block at a time. On a tiny model
trained for a few seconds on real code, the distilled model decodes the teacher's prompts in fewer
forward passes at the same confidence threshold."""

import json

import numpy as np
import pytest
import torch

from byte_corpus import write_byte_shards
from unmask.cli import main
from unmask.data.shards import TokenShards
from unmask.errors import ConfigError, UnmaskError
from unmask.model import from_pretrained
from unmask.sampling import Request, SamplerConfig, generate
from unmask.train import load_config, train
from unmask.train.config import TrainConfig
from unmask.train.objectives import Draws, make_objective
from unmask.train.progress import read_log
from unmask.train.teacher import TeacherSpec, pick_windows, write_teacher_shards
from test_train import FAST, TINY, assert_same_weights

PROMPT, ANSWER, BLOCK = 16, 16, 8
SPEC = TeacherSpec(prompts=32, val_prompts=8, prompt_len=PROMPT, answer_len=ANSWER, batch_size=16)
DECODE = SamplerConfig(policy="threshold", threshold=0.9, block_length=BLOCK, cache="none")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_byte_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def student(tmp_path_factory, shards):
    """A tiny masked-diffusion model, trained briefly: unsure enough to decode about one token per step."""
    out = tmp_path_factory.mktemp("mdlm")
    train(load_config(TINY, [f"data.shards={shards}", f"out_dir={out}", *FAST, "optim.max_steps=60"]))
    return out / "model"


@pytest.fixture(scope="module")
def teacher_shards(tmp_path_factory, shards, student):
    out = tmp_path_factory.mktemp("teacher") / "records"
    write_teacher_shards(from_pretrained(student), None, shards, out, SPEC, DECODE, teacher=str(student),
                         progress=False)
    return out


def test_teacher_records_are_prompts_from_the_shards_and_the_models_own_answers(shards, student, teacher_shards):
    index = json.loads((teacher_shards / "index.json").read_text())
    assert index["teacher"]["spec"]["prompt_len"] == PROMPT and index["teacher"]["model"] == str(student)
    assert index["teacher"]["answer_tokens"] == (SPEC.prompts + SPEC.val_prompts) * ANSWER
    records = TokenShards(teacher_shards, "train")
    assert len(records) == SPEC.prompts * (PROMPT + ANSWER)
    source = TokenShards(shards, "train")
    picks = pick_windows(len(source), PROMPT, SPEC.prompts, SPEC.seed * 2)
    model = from_pretrained(student)
    for i in (0, 17):
        record = records.read(i * (PROMPT + ANSWER), PROMPT + ANSWER)
        prompt = source.read(int(picks[i]) * PROMPT, PROMPT)
        assert np.array_equal(record[:PROMPT], prompt)
        # decoded alone, the prompt gets the same answer as in its batch of 16 (batch invariance)
        [alone] = generate(model, None, [Request(prompt_ids=prompt.tolist(), add_bos=False)],
                           DECODE.replace(max_new_tokens=ANSWER, stop_token_ids=()))
        assert record[PROMPT:].tolist() == alone.token_ids
    assert len(TokenShards(teacher_shards, "val")) == SPEC.val_prompts * (PROMPT + ANSWER)


def test_the_teachers_tokenizer_travels_with_its_records(tmp_path, shards, student):
    from sampling_helpers import byte_tokenizer

    out = tmp_path / "records"
    spec = TeacherSpec(prompts=4, val_prompts=0, prompt_len=PROMPT, answer_len=ANSWER)
    write_teacher_shards(from_pretrained(student), byte_tokenizer(), shards, out, spec, DECODE, progress=False)
    assert (out / "tokenizer.json").is_file()
    index = json.loads((out / "index.json").read_text())
    assert index["num_bytes"]["train"] > 0 and list(index["splits"]) == ["train"]


def test_the_objective_masks_one_block_as_the_sampler_meets_it(student):
    config = load_config(TINY, ["objective=distill", f"init_from={student}", "data.shards=x",
                                f"data.window_len={PROMPT + ANSWER}", f"distill.prompt_len={PROMPT}",
                                f"distill.block_len={BLOCK}"])
    model = from_pretrained(student)
    objective = make_objective(config, model.config)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x0 = torch.randint(6, 262, (64, PROMPT + ANSWER))
    loss = objective.loss(model, x0, Draws(7, 64, slice(0, 64), torch.device("cpu")))
    hook.remove()
    assert torch.isfinite(loss) and loss > 0
    masked = seen[0] == model.config.mask_token_id
    assert not masked[:, :PROMPT].any()
    blocks = set()
    for row in masked:
        first = int(row.nonzero()[0]) if row.any() else None
        assert first is not None
        block = (first - PROMPT) // BLOCK
        blocks.add(block)
        end = PROMPT + (block + 1) * BLOCK
        assert row[end:].all() and not row[:PROMPT + block * BLOCK].any()  # later blocks all masked
    assert blocks == {0, 1}  # both answer blocks get trained


def test_the_entropy_term_adds_to_the_cross_entropy(student):
    base = ["objective=distill", f"init_from={student}", "data.shards=x", f"data.window_len={PROMPT + ANSWER}",
            f"distill.prompt_len={PROMPT}", f"distill.block_len={BLOCK}"]
    model = from_pretrained(student)
    x0 = torch.randint(6, 262, (8, PROMPT + ANSWER))
    losses = []
    for weight in (0.0, 1.0):
        objective = make_objective(load_config(TINY, base + [f"distill.entropy_weight={weight}"]), model.config)
        losses.append(objective.loss(model, x0, Draws(3, 8, slice(0, 8), torch.device("cpu"))).item())
    assert losses[1] >= losses[0] > 0


def test_the_mdlm_term_adds_the_any_order_loss_of_the_record(student):
    base = ["objective=distill", f"init_from={student}", "data.shards=x", f"data.window_len={PROMPT + ANSWER}",
            f"distill.prompt_len={PROMPT}", f"distill.block_len={BLOCK}", "distill.entropy_weight=0"]
    model = from_pretrained(student)
    x0 = torch.randint(6, 262, (8, PROMPT + ANSWER))
    draws = lambda: Draws(3, 8, slice(0, 8), torch.device("cpu"))  # noqa: E731
    plain = make_objective(load_config(TINY, base), model.config)
    mixed = make_objective(load_config(TINY, base + ["distill.mdlm_weight=0.5"]), model.config)
    # The distillation draws come first, so the mixed loss is the plain one plus 0.5 x an MDLM loss, which
    # on random tokens is large (about 1/t x ln V per masked token).
    gap = mixed.loss(model, x0, draws()).item() - plain.loss(model, x0, draws()).item()
    assert gap > 0.5 * 1.0
    assert mixed.tokens_fed(PROMPT + ANSWER) == 2 * plain.tokens_fed(PROMPT + ANSWER)


def test_the_mdlm_term_reads_the_anchor_batch_when_given(student):
    base = ["init_from=" + str(student), "data.shards=x", f"data.window_len={PROMPT + ANSWER}"]
    distill = base + ["objective=distill", f"distill.prompt_len={PROMPT}", f"distill.block_len={BLOCK}",
                      "distill.entropy_weight=0"]
    model = from_pretrained(student)
    x0 = torch.randint(6, 262, (8, PROMPT + ANSWER))
    anchor = torch.randint(6, 262, (8, 48))  # its own length: real-code windows need not match the records
    draws = lambda: Draws(3, 8, slice(0, 8), torch.device("cpu"))  # noqa: E731
    plain = make_objective(load_config(TINY, distill), model.config)
    mixed = make_objective(load_config(TINY, distill + ["distill.mdlm_weight=0.5", "distill.mdlm_shards=y"]),
                           model.config)
    mdlm = make_objective(load_config(TINY, base + ["objective=mdlm"]), model.config)
    # The same generator goes on from the distillation draws to the MDLM term's, so the term is exactly the MDLM
    # objective's loss of the anchor batch under those draws.
    d = draws()
    expected = plain.loss(model, x0, d) + 0.5 * mdlm.loss(model, anchor, d)
    torch.testing.assert_close(mixed.loss(model, x0, draws(), anchor=anchor), expected)
    assert mixed.tokens_fed(PROMPT + ANSWER) == plain.tokens_fed(PROMPT + ANSWER)  # the loop counts the anchor


def test_distillation_with_real_code_continues_the_students_data_and_resumes_exactly(tmp_path, shards, student,
                                                                                       teacher_shards):
    sets = [f"data.shards={teacher_shards}", *FAST, "objective=distill", f"init_from={student}",
            "init_continue_data=false", f"data.window_len={PROMPT + ANSWER}", f"distill.prompt_len={PROMPT}",
            f"distill.block_len={BLOCK}", "distill.mdlm_weight=0.5", f"distill.mdlm_shards={shards}",
            "distill.mdlm_window_len=64", "optim.max_steps=4"]
    full = train(load_config(TINY, sets + [f"out_dir={tmp_path / 'full'}"]))
    state = json.loads((full.checkpoint / "trainer_state.json").read_text())
    student_state = json.loads((student / "trainer_state.json").read_text())
    # the real-code windows go on from where the student's run stopped: 4 more batches of its loader
    assert student_state["loader"]["window_len"] == 64 and student_state["config"]["data"]["shards"] == str(shards)
    assert state["mdlm_loader"]["step"] == student_state["loader"]["step"] + 4
    assert state["loader"]["step"] == 4 and state["tokens_seen"] == 4 * 8 * ((PROMPT + ANSWER) + 64)
    assert state["context_len"] == 64
    cut = train(load_config(TINY, sets + [f"out_dir={tmp_path / 'cut'}", "system.stop_at_step=2"]))
    assert (cut.status, cut.step) == ("stopped", 2)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert_same_weights(full.checkpoint, tmp_path / "cut" / "checkpoints" / "step-00000004")
    # a second round, distilling the distilled model, reads on where the first round's MDLM term stopped
    sets_again = [s for s in sets if not s.startswith(("init_from=", "optim.max_steps="))]
    again = train(load_config(TINY, sets_again + [f"init_from={tmp_path / 'full' / 'model'}",
                                                  f"out_dir={tmp_path / 'again'}", "optim.max_steps=2"]))
    again_state = json.loads((again.checkpoint / "trainer_state.json").read_text())
    assert again_state["mdlm_loader"]["step"] == state["mdlm_loader"]["step"] + 2
    # a model that never read those shards has no place to continue from
    with pytest.raises(ConfigError, match="did not record reading"):
        train(load_config(TINY, sets + [f"out_dir={tmp_path / 'other'}", f"distill.mdlm_shards={teacher_shards}"]))


def test_distillation_decodes_the_teachers_prompts_in_fewer_forward_passes(tmp_path, student, teacher_shards):
    out = tmp_path / "distilled"
    config = load_config(TINY, [f"data.shards={teacher_shards}", f"out_dir={out}", *FAST, "objective=distill",
                                f"init_from={student}", "init_continue_data=false",
                                f"data.window_len={PROMPT + ANSWER}", f"distill.prompt_len={PROMPT}",
                                f"distill.block_len={BLOCK}", "optim.max_steps=80", "optim.lr=2e-3"])
    assert train(config).status == "finished"
    # the records are 32 tokens, but the weights were trained on the student's longer windows, and evaluations
    # fit their examples to the longest (evals/completers.py)
    student_window = json.loads((student / "trainer_state.json").read_text())["config"]["data"]["window_len"]
    assert student_window > PROMPT + ANSWER
    assert json.loads((out / "model" / "trainer_state.json").read_text())["context_len"] == student_window
    losses = [r["loss"] for r in read_log(out / "log.jsonl", "train")]
    assert sum(losses[-10:]) / 10 < 0.7 * losses[0]
    records = TokenShards(teacher_shards, "train")
    prompts = [Request(prompt_ids=records.read(i * (PROMPT + ANSWER), PROMPT).tolist(), add_bos=False)
               for i in range(SPEC.prompts)]
    decode = DECODE.replace(max_new_tokens=ANSWER, stop_token_ids=())
    before = generate(from_pretrained(student), None, prompts, decode)
    after = generate(from_pretrained(out / "model"), None, prompts, decode)
    forwards = [sum(r.stats.forward_passes for r in rs) for rs in (before, after)]
    print("forward passes before / after", forwards)
    assert forwards[1] < 0.8 * forwards[0], forwards
    # ... and mostly still writes the teacher's answers
    same = sum(a.token_ids == records.read(i * (PROMPT + ANSWER) + PROMPT, ANSWER).tolist()
               for i, a in enumerate(after))
    print("answers equal to the teacher's", same, "of", SPEC.prompts)
    assert same >= SPEC.prompts // 2, same


def test_evaluations_fit_examples_to_the_recorded_context(tmp_path):
    import shutil

    from unmask.evals.completers import UnmaskCompleter
    from unmask.model.loading import BUNDLED_MODELS_DIR

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_MODELS_DIR / "default", model)
    state = json.loads((model / "trainer_state.json").read_text())
    state["config"]["data"]["window_len"] = 192
    state.pop("context_len", None)  # a state written before context_len: the run's own window
    (model / "trainer_state.json").write_text(json.dumps(state))
    assert UnmaskCompleter(str(model), DECODE).context_length == 192  # a state of before context_len
    state["context_len"] = 256
    (model / "trainer_state.json").write_text(json.dumps(state))
    assert UnmaskCompleter(str(model), DECODE).context_length == 256


@pytest.mark.parametrize("overrides, message", [
    (["objective=distill"], "init_from must name the model to distill"),
    (["objective=distill", "init_from=m", "data.window_len=100", "distill.prompt_len=64"],
     "data.window_len 100 must be distill.prompt_len 64 plus a positive multiple of distill.block_len 16"),
    (["objective=distill", "init_from=m", "data.window_len=64", "distill.prompt_len=64"], "data.window_len 64"),
    (["objective=distill", "init_from=m", "data.window_len=96", "distill.prompt_len=64",
      "distill.entropy_weight=-1"], "distill.entropy_weight must be >= 0"),
    (["objective=distill", "init_from=m", "data.window_len=96", "distill.prompt_len=64",
      "distill.mdlm_weight=-0.5"], "distill.mdlm_weight must be >= 0"),
    (["objective=distill", "init_from=m", "data.window_len=96", "distill.prompt_len=64",
      "distill.mdlm_shards=data/shards"], "distill.mdlm_shards is read only by the MDLM term"),
])
def test_bad_distill_configs_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, ["data.shards=x", *overrides])


def test_teacher_cli_bad_input_is_one_line_error(tmp_path, shards, student, capsys):
    common = ["teacher", "--model", str(student), "--shards", str(shards), "--out", str(tmp_path / "t"),
              "--no-progress"]
    assert main(common + ["--prompts", "100000", "--prompt-len", "16", "--answer-len", "16"]) == 2
    assert "asked for 100000 prompts of 16 tokens" in capsys.readouterr().err
    assert main(common) == 2  # 64 + 64 tokens
    assert "prompt_len + answer_len = 128 tokens is over the model's context of 64" in capsys.readouterr().err
    assert main(common + ["--prompts", "0"]) == 2
    assert "prompts must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert TrainConfig().distill.block_len == 16
