"""The shared sampler flags (sampling/cli_args.py): one definition for generate, eval, serve and bench."""

import argparse

import pytest

from unmask.cli import build_parser
from unmask.errors import UnmaskError
from unmask.sampling import SamplerConfig
from unmask.sampling.cli_args import SAMPLER_FLAGS, add_sampler_arguments, sampler_config_from_args


def parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_sampler_arguments(p.add_argument_group("sampler"), **kw)
    return p.parse_args(argv)


def test_generation_config_then_flags_then_overrides():
    gen = {"policy": "steps", "threshold": 0.5, "temperature": 0.2, "block_size": 16, "eos_token_id": [7, 9]}
    args = parse(["--threshold", "0.8", "--block-size", "8", "--stop", "\n\n", "--stop", "def "])
    config = sampler_config_from_args(args, gen, temperature=0.0, top_k=None)
    assert (config.policy, config.threshold, config.block_length) == ("steps", 0.8, 8)
    assert config.temperature == 0.0 and config.top_k == 0  # None overrides are ignored
    assert config.stop == ("\n\n", "def ") and config.stop_token_ids == (7, 9)
    assert sampler_config_from_args(parse([])) == sampler_config_from_args(parse([]), {})


def test_every_flag_reaches_its_field():
    argv = ["--policy", "entropy", "--threshold", "1", "--entropy-bound", "0.3", "--steps", "4", "--order", "random",
            "--block-length", "0", "--cache", "prefix", "--refresh-every", "2", "--max-new-tokens", "9",
            "--temperature", "0.7", "--top-p", "0.9", "--top-k", "5", "--seed", "3", "--stop", "x",
            "--stop-token-ids", "2,7", "--infill-length", "4", "--no-token-healing", "--no-suffix-healing",
            "--frequency-penalty", "0.5", "--presence-penalty", "-1", "--stop-at-block-end"]
    config = sampler_config_from_args(parse(argv))
    got = {name: getattr(config, name) for _, name in SAMPLER_FLAGS.values()}
    assert got == dict(policy="entropy", threshold=1.0, entropy_bound=0.3, steps_per_block=4, order="random",
                       block_length=0, cache="prefix", refresh_every=2, max_new_tokens=9, temperature=0.7, top_p=0.9,
                       top_k=5, seed=3, stop=("x",), stop_token_ids=(2, 7), infill_length=4, token_healing=False,
                       suffix_healing=False, frequency_penalty=0.5, presence_penalty=-1.0, stop_at_block_end=True)
    assert sampler_config_from_args(parse(["--stop-token-ids", "none"]), {"eos_token_id": 3}).stop_token_ids == ()


def test_generate_ends_python_answers_at_the_block_end_unless_told_not_to():
    parser = build_parser()
    config = sampler_config_from_args(parser.parse_args(["generate", "def f():"]))
    assert config.stop_at_block_end is True
    off = sampler_config_from_args(parser.parse_args(["generate", "def f():", "--no-stop-at-block-end"]))
    assert off.stop_at_block_end is False
    assert sampler_config_from_args(parse([]), {"stop_at_block_end": True}).stop_at_block_end is True
    assert sampler_config_from_args(parse([])).stop_at_block_end is False  # the API's default
    with pytest.raises(UnmaskError, match="stop_at_block_end must be true or false"):
        sampler_config_from_args(parse([]), {"stop_at_block_end": "yes"})


def test_excluded_flags_keep_the_commands_own_meaning():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=11)  # e.g. eval's run seed
    p.add_argument("--infill-length", choices=("oracle", "unknown"), default="unknown")
    add_sampler_arguments(p, exclude=("seed", "infill_length"))
    args = p.parse_args(["--seed", "5", "--infill-length", "oracle"])
    config = sampler_config_from_args(args)
    assert config.seed == 0 and config.infill_length is None
    with pytest.raises(AssertionError):
        add_sampler_arguments(argparse.ArgumentParser(), exclude=("nonsense",))


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "0"], "--threshold must be in (0, 1], got 0.0"),
    (["--threshold", "1.5"], "--threshold must be in (0, 1], got 1.5"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--temperature", "-1"], "--temperature must be in [0, inf)"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--stop-token-ids", "a"], "--stop-token-ids 'a': expected comma-separated token ids"),
    (["--stop-token-ids", "-3"], "--stop-token-ids must be an integer >= 0"),
])
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(UnmaskError) as e:
        sampler_config_from_args(parse(argv))
    assert str(e.value).startswith(message)


def test_generate_and_eval_share_the_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("generate", "eval"):
        text = sub.choices[command].format_help()
        assert "--threshold TAU" in text and "in (0, 1]" in text and "--stop-token-ids IDS" in text, command
    gen = parser.parse_args(["generate", "x", "--threshold", "0.7", "--seed", "4"])
    assert sampler_config_from_args(gen).seed == 4
    ev = parser.parse_args(["eval", "humaneval", "--threshold", "0.7", "--seed", "4"])
    assert ev.sampler_flags and "seed" not in ev.sampler_flags and ev.seed == 4
    assert sampler_config_from_args(ev).threshold == 0.7


@pytest.mark.parametrize("field,flag,bad", [("token_healing", "--no-token-healing", "yes"),
                                            ("suffix_healing", "--no-suffix-healing", 1)])
def test_healing_is_on_by_default_and_a_flag_turns_it_off(field, flag, bad):
    assert getattr(sampler_config_from_args(parse([])), field) is True
    assert getattr(sampler_config_from_args(parse([flag])), field) is False
    with pytest.raises(Exception, match=field):
        SamplerConfig(**{field: bad})
