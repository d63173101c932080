"""`unmask eval`: score a model on code tasks, held-out lines or likelihood, sweep sampler settings, or compare.

    unmask eval humaneval --model DIR --n-samples 10 --k 1,10 --temperature 0.2
    unmask eval infill-single --model DIR --infill-length oracle --limit 100
    unmask eval my_problems.jsonl --model DIR                     # HumanEval-format JSONL
    unmask eval humaneval --url http://localhost:8000 --served-model default   # any OpenAI-compatible server
    unmask eval lines --model DIR --corpus data/corpus --limit 150
    unmask eval likelihood --model DIR --shards data/shards
    unmask eval sweep humaneval --model DIR --grid threshold=0.5,0.7,0.9 --ar-model DIR_AR --out runs/sweep
    unmask eval compare runs/eval/default/lines.json runs/eval/default-ar/lines.json   # paired sign test
    unmask eval compare A/likelihood.json B/likelihood.json   # paired bits/byte difference, same windows

Sampler settings default to the model's generation_config.json; the flags below override them. Results go
to --out (default runs/eval/MODEL/TASK.json); running the same command again resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cpu_threads import HELP as THREADS_HELP
from ..sampling.cli_args import add_sampler_arguments, sampler_config_from_args

CODE_TASKS = ("humaneval", "infill-single", "infill-multi", "infill-span")
OTHER_TASKS = ("lines", "likelihood", "sweep", "compare")
LINES_DEFAULT_MAX_NEW_TOKENS = 32  # a line rarely needs more; a 128-token canvas would cost 4x per step


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=__doc__,
                              epilog="TASK: " + ", ".join(CODE_TASKS + OTHER_TASKS)
                              + ", or a .jsonl file in HumanEval's format",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", metavar="TASK", help="what to evaluate (see below)")
    p.add_argument("task_args", metavar="ARG", nargs="*",
                   help="with 'sweep': the task to sweep over; with 'compare': two results files, A and B")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help="checkpoint folder or bundled name (default: the bundled 'default')")
    m.add_argument("--url", default=None, help="score an OpenAI-compatible server instead (its /v1/completions)")
    m.add_argument("--served-model", default="default", help="with --url: the model name to request")
    m.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    m.add_argument("--threads", metavar="N", type=int, default=0, help=THREADS_HELP)
    r = p.add_argument_group("run")
    r.add_argument("--n-samples", type=int, default=1, help="samples per task")
    r.add_argument("--k", default="1", help="comma-separated k of pass@k")
    r.add_argument("--limit", type=int, default=None, help="only the first N tasks (lines: N lines)")
    r.add_argument("--out", default=None, help="results file (.json; a folder for sweep)")
    r.add_argument("--seed", type=int, default=0, help="seeds the samples, the infilling tasks and the lines drawn")
    r.add_argument("--batch-size", type=int, default=None,
                   help="requests decoded together (default 1; likelihood: 8 windows per forward pass)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    c = p.add_argument_group("code tasks")
    c.add_argument("--infill-length", choices=("unknown", "oracle"), default="unknown",
                   help="infilling: tell the model the gap's length in tokens (oracle) or not")
    c.add_argument("--per-problem", type=int, default=5, help="infill-multi / infill-span tasks per problem")
    c.add_argument("--timeout", type=float, default=5.0, help="wall-clock seconds per program in the sandbox")
    c.add_argument("--memory-mb", type=int, default=2048, help="address-space limit per program")
    c.add_argument("--workers", type=int, default=None, help="programs run at once (default: the cores)")
    c.add_argument("--sandbox-python", default=None,
                   help="interpreter for the programs (default: this one, or python3 on PATH if the sandbox user "
                        "cannot run this one)")
    ln = p.add_argument_group("lines")
    ln.add_argument("--corpus", default=None, help="corpus folder (unmask corpus build); its --split is used")
    ln.add_argument("--source", default=None, help="or: a source file or folder of .py files")
    ln.add_argument("--gap-newline", action="store_true",
                    help="the infill gaps include the line's newline (the suffix starts at the next line), so a "
                         "tokenizer that merges a line's end with its newline is not split there (modes "
                         "infill+nl, infill-line+nl)")
    ln.add_argument("--context", type=int, default=None,
                    help="context length to fit (default: the training window in the model folder's "
                         "trainer_state.json, else the model's position limit)")
    lk = p.add_argument_group("likelihood")
    lk.add_argument("--shards", default=None, help="token shard folder (unmask corpus tokenize)")
    lk.add_argument("--split", default="val", help="split of --corpus or --shards")
    lk.add_argument("--window", type=int, default=256, help="tokens per window")
    lk.add_argument("--windows", type=int, default=100, help="number of windows (the first ones of the split)")
    lk.add_argument("--mc-samples", type=int, default=16, help="Monte Carlo samples per window (diffusion bound)")
    lk.add_argument("--likelihood-order", choices=("random", "blocks", "confidence", "left-to-right"),
                    default="random",
                    help="diffusion models: the ELBO over random unmasking orders (a bound, default); 'blocks': the "
                         "ELBO of decoding block by block as the semi-autoregressive sampler does (later blocks "
                         "masked; window / block passes per sample); 'confidence': the exact likelihood of the "
                         "one-token-per-step sampler, most confident position of the block first (window - 1 "
                         "passes of --batch-size windows); 'left-to-right': the exact likelihood of decoding left "
                         "to right one token per step (window - 1 passes per window)")
    lk.add_argument("--likelihood-block", type=int, default=None, metavar="N",
                    help="block length of --likelihood-order blocks and confidence (default: the model's "
                         "generation_config.json block_length, else 32)")
    sw = p.add_argument_group("sweep")
    sw.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                    help="a sampler setting and its values (repeatable; the grid is every combination)")
    sw.add_argument("--ar-model", default=None,
                    help="the autoregressive twin, evaluated once (its generation_config.json and the flags given)")
    # The seed is the run's (it also seeds the samples); stops and infill lengths are set per task.
    add_sampler_arguments(p.add_argument_group("sampler (defaults: the model's generation_config.json, then these; "
                                               f"lines: --max-new-tokens {LINES_DEFAULT_MAX_NEW_TOKENS})"),
                          exclude=("seed", "stop", "infill_length"))
    p.set_defaults(func=run)
    return p


def _sampler_config(args: argparse.Namespace, generation_config: dict, **overrides):
    config = sampler_config_from_args(args, generation_config, seed=args.seed)
    return config.replace(**overrides) if overrides else config


def _ks(text: str) -> tuple[int, ...]:
    from ..errors import UnmaskError

    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise UnmaskError(f"--k {text!r}: expected comma-separated integers such as 1,10") from None
    if not ks or ks[0] < 1:
        raise UnmaskError(f"--k {text!r}: expected positive integers")
    return ks


def run(args: argparse.Namespace) -> int:
    from ..errors import UnmaskError

    task, extra = args.task, args.task_args
    if task == "compare":
        if len(extra) != 2:
            raise UnmaskError("eval compare needs two results files, e.g. 'unmask eval compare A.json B.json'")
        return _run_compare(args, *extra)
    args.sweep_task = None
    if task == "sweep":
        if len(extra) != 1:
            raise UnmaskError("eval sweep needs the task to sweep, e.g. 'unmask eval sweep humaneval --grid ...'")
        args.sweep_task = extra[0]
        return _run_sweep(args)
    if extra:
        raise UnmaskError(f"unexpected argument {extra[0]!r} (only 'sweep' and 'compare' take more)")
    if task == "likelihood":
        return _run_likelihood(args)
    if task not in CODE_TASKS + ("lines",) and not task.endswith((".jsonl", ".jsonl.gz")):
        raise UnmaskError(f"unknown task {task!r}: choose one of {', '.join(CODE_TASKS + OTHER_TASKS)}, "
                          "or give a .jsonl file")
    completer = _completer(args, args.model)
    results = _evaluate(args, task, completer, Path(args.out or _default_out(args, task, completer)))
    _print_summary(results)
    return 0


def _completer(args, model, lm=None, **sampler_overrides):
    from .completers import OpenAICompleter, UnmaskCompleter

    if args.url:
        from ..errors import UnmaskError

        if args.model or args.ar_model or args.task == "sweep":
            raise UnmaskError("--url scores a server; it does not combine with --model, --ar-model or sweep")
        return OpenAICompleter(args.url, args.served_model, max_tokens=args.max_new_tokens or _default_tokens(args),
                               temperature=args.temperature or 0.0, top_p=args.top_p or 1.0)
    from ..cpu_threads import use_threads
    from ..model.loading import load_model

    use_threads(args.threads, args.device)
    lm = lm or load_model(model, device=args.device)
    if args.task == "lines" or args.sweep_task == "lines":
        sampler_overrides.setdefault("max_new_tokens", args.max_new_tokens or LINES_DEFAULT_MAX_NEW_TOKENS)
    return UnmaskCompleter(lm, _sampler_config(args, lm.generation_config, **sampler_overrides), device=args.device,
                           max_batch_size=args.batch_size or 1)


def _default_tokens(args) -> int:
    return LINES_DEFAULT_MAX_NEW_TOKENS if "lines" in (args.task, args.sweep_task) else 128


def _default_out(args, task: str, completer) -> str:
    model = completer.identity().get("name") or completer.identity().get("model", "server")
    return str(Path("runs") / "eval" / model / f"{Path(task).name.split('.')[0]}.json")


def _evaluate(args, task: str, completer, out: Path) -> dict:
    """One eval of `task` with `completer`, written to `out` (resumable)."""
    from .runner import EvalSettings, run_eval
    from .sandbox import SandboxConfig
    from .scoring import ExactLineScorer, ExecutionScorer

    settings = EvalSettings(task=task, n_samples=args.n_samples, ks=_ks(args.k), seed=args.seed,
                            per_problem=args.per_problem, length_mode=args.infill_length,
                            batch_size=args.batch_size or 1)
    log = (lambda *a: print(*a, file=sys.stderr))
    if task == "lines":
        from .lines import mode_of

        tasks, settings.task_options = _line_tasks(args, completer)
        return run_eval(tasks, completer, settings, out, ExactLineScorer(), progress=not args.no_progress, log=log,
                        group_of=mode_of)
    from .tasks import load_tasks

    settings.limit = args.limit
    sandbox = SandboxConfig(timeout_s=args.timeout, memory_bytes=args.memory_mb * 1024**2, workers=args.workers,
                            python=args.sandbox_python)
    return run_eval(load_tasks(task, seed=args.seed, per_problem=args.per_problem), completer, settings, out,
                    ExecutionScorer(sandbox), progress=not args.no_progress, log=log)


def _line_tasks(args, completer):
    from ..errors import UnmaskError
    from .lines import build_line_tasks, read_corpus_split, read_sources

    if bool(args.corpus) == bool(args.source):
        raise UnmaskError("eval lines needs exactly one of --corpus DIR (its validation split) or --source PATH")
    docs = read_corpus_split(args.corpus, args.split) if args.corpus else read_sources(args.source)
    context = args.context or getattr(completer, "context_length", None)
    if context is None:
        raise UnmaskError("eval lines over --url needs --context (the model's context length in tokens)")
    if completer.count_tokens("x") is None:
        raise UnmaskError("eval lines needs the model's tokenizer to fit the context; use --model")
    budget = completer.settings().get("max_new_tokens") or completer.settings().get("max_tokens")
    tasks = build_line_tasks(docs, args.limit or 100, seed=args.seed, count_tokens=completer.count_tokens,
                             context_tokens=context, budget_tokens=budget, gap_newline=args.gap_newline)
    source = str(Path(args.corpus or args.source).resolve())
    return tasks, {"source": source, "split": args.split if args.corpus else None, "context_tokens": context,
                   "gap_newline": args.gap_newline}


def _print_summary(results: dict) -> None:
    m, s = results["metrics"], results["speed"]
    parts = [f"{k} {v:.4f}" for k, v in m.items() if k.startswith("pass@") and v is not None]
    for group, scores in results.get("by_group", {}).items():
        parts.append(f"{group} exact match {scores['metrics']['pass@1']:.4f}")
    if m.get("compile_rate") is not None:
        parts.append(f"compile rate {m['compile_rate']:.4f}")
    if s["tokens_per_second"] is not None:
        parts.append(f"{s['tokens_per_second']:.1f} tokens/s")
    if s["tokens_per_forward"] is not None:
        parts.append(f"{s['tokens_per_forward']:.2f} tokens/forward")
    print(f"{results['task']}: {results['num_tasks']} tasks x {results['n_samples']} samples: " + ", ".join(parts))
    print(f"outcomes: {json.dumps(m['outcomes'])}")


def _run_likelihood(args) -> int:
    from ..cpu_threads import use_threads
    from ..errors import UnmaskError
    from ..model.loading import load_model
    from .completers import weights_sha256
    from .runner import hardware_info, software_info

    if not args.shards:
        raise UnmaskError("eval likelihood needs --shards DIR (a folder made by 'unmask corpus tokenize')")
    from .likelihood import evaluate_likelihood

    use_threads(args.threads, args.device)
    lm = load_model(args.model, device=args.device)
    result = evaluate_likelihood(lm, args.shards, split=args.split, window_len=args.window, num_windows=args.windows,
                                 mc_samples=args.mc_samples, seed=args.seed, batch_size=args.batch_size or 8,
                                 order=args.likelihood_order,
                                 block_len=args.likelihood_block or lm.generation_config.get("block_length") or 32,
                                 progress=not args.no_progress)
    result.update(model={"name": lm.name, **weights_sha256(lm.path), "attention": lm.model.config.attention},
                  shards=str(Path(args.shards).resolve()), hardware=hardware_info(), software=software_info())
    out = Path(args.out or Path("runs") / "eval" / lm.name / "likelihood.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    bpb = result["bits_per_byte"]
    err = result["bits_per_byte_stderr"]
    print(f"likelihood ({result['metric']}, {result['objective']}): {result['nats_per_token']:.4f} nats/token"
          + (f", {bpb:.4f} +- {err or 0:.4f} bits/byte" if bpb is not None else " (no byte count in the shard index)")
          + f" over {result['windows']} windows of {result['window_len']}; wrote {out}")
    return 0


def _run_sweep(args) -> int:
    from ..cpu_threads import use_threads
    from ..errors import UnmaskError
    from ..model.loading import load_model
    from .sweep import parse_grid, run_sweep, sampler_field_types

    task = args.sweep_task
    if args.url:
        raise UnmaskError("sweep decodes a local model with many sampler settings; --url is not supported")
    points = parse_grid(args.grid, sampler_field_types())
    use_threads(args.threads, args.device)
    lm = load_model(args.model, device=args.device)
    out = Path(args.out or Path("runs") / "eval" / lm.name / f"sweep-{Path(task).name.split('.')[0]}")

    def evaluate(overrides, path):
        return _evaluate(args, task, _completer(args, None, lm=lm, **overrides), path)

    def evaluate_ar(path):
        return _evaluate(args, task, _completer(args, args.ar_model), path)

    rows = run_sweep(points, evaluate, out, evaluate_ar=evaluate_ar if args.ar_model else None,
                     log=lambda *a: print(*a, file=sys.stderr))
    print((out / "frontier.md").read_text(), end="")
    return 0 if rows else 1


def _run_compare(args, path_a: str, path_b: str) -> int:
    from dataclasses import asdict

    from ..errors import UnmaskError
    from .compare import compare_likelihoods, compare_results, format_likelihood_pair, format_table, result_task

    def load(path):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UnmaskError(f"cannot read results file {path}: {e}") from None

    a, b = load(path_a), load(path_b)
    names = [r.get("model", {}).get("name") or Path(p).stem for r, p in ((a, path_a), (b, path_b))]
    if names[0] == names[1]:
        names = ["A", "B"]
    task, task_b = result_task(a), result_task(b)
    if "likelihood" in (task, task_b):
        if task != task_b:
            raise UnmaskError(f"the results are of different tasks ({task!r} vs {task_b!r})")
        pair = compare_likelihoods(a, b)
        table, found, paired_over = format_likelihood_pair(pair, *names), asdict(pair), "windows"
    else:
        rows = compare_results(a, b)
        table, found, paired_over = format_table(rows, *names), {"rows": [asdict(r) for r in rows]}, "tasks"
    print(f"{task}: {names[0]} ({path_a}) vs {names[1]} ({path_b}), paired over the {paired_over} both scored")
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"task": task, "a": path_a, "b": path_b, "names": names, **found}, indent=2))
    return 0
