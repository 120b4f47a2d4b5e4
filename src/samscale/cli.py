"""The `samscale` command line: thin wrappers that parse arguments, call the library and print."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from samscale.errors import ConfigError, UsageError
from samscale.sweep.gpus import DEFAULT_RUNS_PER_GPU

DEFAULT_WORKDIR = Path("runs")


def _store(workdir: Path):
    from samscale.store import RunStore
    from samscale.workdir import store_path

    path = store_path(workdir)
    if not path.exists():
        raise ConfigError(f"no run store at {path}; train or sweep first, or pass --workdir")
    return RunStore(path)


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run from a RunSpec YAML (skipped if the store already has it finished)."""
    from samscale.spec.run import load_spec
    from samscale.store import RunStore
    from samscale.sweep.executors import execute_run
    from samscale.sweep.preflight import preflight
    from samscale.train.checkpoint import resume_state
    from samscale.train.events import EpochEnded
    from samscale.train.placement import check_process_count, launched_by_torchrun, torchrun_world
    from samscale.version import code_version
    from samscale.workdir import checkpoint_path, store_path

    _positive("--nproc", args.nproc)
    _check_study_option(args.study)
    nproc, rank = args.nproc, 0
    if launched_by_torchrun():  # one of torchrun's ranks: the run has torchrun's world size
        rank, world, _ = torchrun_world()
        if nproc not in (None, world):
            raise UsageError(f"--nproc {nproc} but torchrun started {world} processes; leave --nproc out")
        nproc = world
    spec = load_spec(args.config, args.set + ([f"runtime.nproc={nproc}"] if nproc else []))
    _positive("--threads", args.threads)
    _check_models([spec])
    if not launched_by_torchrun():
        check_process_count(spec.runtime.nproc, spec.runtime.device)
    preflight([spec])  # device, dataset options, data files and split sizes, before the store is opened
    if checkpoint_path(args.workdir, spec.run_id).is_file():  # refuse a damaged, unsafe or foreign one first
        resume_state(checkpoint_path(args.workdir, spec.run_id))
    if rank != 0:  # rank 0 alone claims and records the run; the others train their slices of it
        return _train_other_rank(spec, args)
    store = RunStore(store_path(args.workdir))
    store.register(spec, study=args.study)
    status = store.status(spec.run_id)
    if status in ("complete", "diverged"):
        print(f"run {spec.run_id} is {status}; nothing to do")
        return 0
    print(f"run {spec.run_id}: {spec.label()}  (store {store.path}, code {code_version()})")

    def show(event) -> None:
        if isinstance(event, EpochEnded):
            row = event.row
            parts = [f"{key}={row[key]:.4f}" for key in ("train_loss", "train_acc", "val_acc", "test_acc") if key in row]
            seconds = f"  ({row['seconds']:.1f}s)" if "seconds" in row else ""
            print(f"  epoch {event.epoch:>3}/{spec.train.epochs}  " + "  ".join(parts) + seconds, flush=True)

    outcome = execute_run(spec.model_dump_json(), str(store.path), str(args.workdir), args.threads, on_event=show)
    if outcome.status == "busy":
        print(f"run {spec.run_id} is being trained by another live process; nothing to do")
        return 1 if launched_by_torchrun() else 0  # rank 0 under torchrun: torchrun then stops the other ranks
    if outcome.status == "lost":
        print(f"run {spec.run_id}: stopped, another process took it over ({outcome.error})", file=sys.stderr)
        return 1
    if outcome.status == "failed":
        print(f"run {spec.run_id} failed:\n{outcome.error}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in (outcome.final or {}).items() if k.startswith(("final_", "best_"))}
    print(f"{outcome.status}: " + "  ".join(f"{k}={v:.4f}" for k, v in summary.items() if isinstance(v, float)))
    return 0 if outcome.status == "complete" else 1


def _train_other_rank(spec, args: argparse.Namespace) -> int:
    """A rank > 0 under torchrun: train this process's slices unless the store already holds the run finished."""
    from samscale.store import RunStore
    from samscale.train.loop import train_run
    from samscale.workdir import store_path

    path = store_path(args.workdir)
    if path.is_file() and RunStore(path).status(spec.run_id) in ("complete", "diverged"):
        return 0
    result = train_run(spec, workdir=args.workdir)
    return 0 if result.status == "complete" else 1


def cmd_runs(args: argparse.Namespace) -> int:
    """Print the table of runs in a work directory's store; in a study's folder, only the runs of its current grid."""
    import pandas as pd

    from samscale.selection.scope import study_runs
    from samscale.spec.study import load_study
    from samscale.workdir import study_path

    _check_study_option(args.study)
    store = _store(args.workdir)
    if args.study and args.study not in (studies := store.studies()):
        raise ConfigError(f"no study {args.study!r} in {store.path}; studies there: {', '.join(studies) or 'none'}")
    study = load_study(study_path(args.workdir), check_runs=False) if study_path(args.workdir).is_file() else None
    if study is not None and args.study in (None, study.name):
        scoped = study_runs(store.runs_frame(study.name), study, store_total=len(store.statuses()))
        frame = scoped.frame
        print(f"study {study.name!r}: {len(frame)} runs; {scoped.header()}")
    else:
        frame = store.runs_frame(args.study)
    if frame.empty:
        print("no runs")
        return 0
    if args.status:
        frame = frame[frame["status"] == args.status]
    columns = ["run_id", "status", "label", "n_params", "epochs_done", "epochs", "final_train_loss",
               "final_val_acc", "final_test_acc", "code_version", "device_name", "precision", "torch_version"]
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(frame[[c for c in columns if c in frame]].to_string(index=False))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Print the paper's model ladders with their parameter counts."""
    from samscale.models.registry import LADDERS, describe_ladder

    if args.family and args.family not in LADDERS:
        raise ConfigError(f"unknown model family {args.family!r}; valid: {', '.join(LADDERS)}")
    families = [args.family] if args.family else list(LADDERS)
    for family in families:
        print(f"{family}:")
        for row in describe_ladder(family):
            extra = "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("size", "n_params"))
            print(f"  size {str(row['size']):>8}  {row['n_params']:>12,d} params  {extra}")
    return 0


def _positive(option: str, value: int | float | None) -> None:
    """Refuse a count that is not positive, naming the option (argparse's exit status 2 follows)."""
    if value is not None and not value > 0:
        raise UsageError(f"{option} must be a positive number, got {value}")


def _check_study_option(study: str | None) -> None:
    """Refuse a --study name that could not name a folder safely (traversal, separators, NUL, hidden names)."""
    from samscale.names import check_name

    if study is not None:
        try:
            check_name(study, "--study")
        except ConfigError as err:
            raise UsageError(str(err)) from None


def _check_executor_options(args: argparse.Namespace) -> None:
    """Refuse non-positive --workers, --threads, --runs-per-gpu and --gpus-per-run (0 GPUs, the default: Ray none,
    local pools one GPU per run when GPUs are present)."""
    for option in ("workers", "threads", "gpus_per_run", "runs_per_gpu"):
        if option != "gpus_per_run" or getattr(args, option):
            _positive("--" + option.replace("_", "-"), getattr(args, option))


def _check_models(specs) -> None:
    """Refuse, before anything is written, runs whose model size or options their family cannot build, or whose
    ALE game ale-py does not ship."""
    from samscale.data.atari_env import rom_path
    from samscale.models.registry import get_family

    for game in sorted({spec.rl.env for spec in specs if spec.rl.is_ale}):
        rom_path(game)
    for spec in specs:
        family = get_family(spec.model.family)
        try:
            family.arguments(spec.model.size, None, None, dict(spec.model.options))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.size / model.options of run {spec.label()}: {err}") from None


def error_headline(error: str | None) -> str:
    """The first line of a run's error: of a traceback, the first line of its (last) exception, e.g.
    `ValueError: val_size=9 must be ...`, not the traceback's header nor the exception message's last line."""
    lines = (error or "").strip().splitlines()
    if not lines:
        return "(no error recorded)"
    if lines[0].startswith("Traceback (most recent call last)"):
        frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
        after = lines[frames[-1] + 1:] if frames else lines[1:]
        return next((line for line in after if line and not line[0].isspace()), lines[-1])
    return lines[0]


def _progress(todo, done: int, total: int):
    """A progress bar over the runs' estimated cost (so the ETA holds although the longest runs start first)."""
    from tqdm import tqdm

    from samscale.sweep.sweep import estimated_cost

    costs = {spec.run_id: estimated_cost(spec) for spec in todo}
    scale = sum(costs.values()) / max(len(costs), 1) or 1.0
    bar = tqdm(total=sum(costs.values()) / scale, unit="run-equiv", desc="sweep", dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {postfix} [{elapsed}<{remaining}]")
    finished = [done]

    def update(outcome, _finished: int, _total: int) -> None:
        finished[0] += 1
        bar.update(min(costs.get(outcome.run_id, scale) / scale, max(bar.total - bar.n, 0.0)))
        bar.set_postfix_str(f"{finished[0]}/{total} runs; {outcome.status}: {outcome.label}")
        if outcome.status == "failed":
            bar.write(f"run {outcome.run_id} failed: {error_headline(outcome.error)}")
        elif outcome.status == "lost":
            bar.write(f"run {outcome.run_id} lost: {outcome.error}")

    return bar, update


def run_sweep(study, workdir: Path, args: argparse.Namespace) -> int:
    """Sweep a study with the executor chosen on the command line, showing progress with an ETA."""
    from samscale.selection.study_checks import check_study
    from samscale.sweep.executors import make_executor
    from samscale.sweep.sweep import plan, sweep

    _check_executor_options(args)
    other_versions = "rerun" if args.rerun_other_versions else "reuse" if args.reuse_other_versions else "refuse"
    specs = study.expand()
    check_study(study, specs)  # the selection rule fits the runs: checked before anything is written
    _check_models(specs)  # every run is valid and buildable before the store is opened or created
    executor = make_executor(args.executor, workers=args.workers, threads=args.threads, address=args.address,
                             gpus_per_run=args.gpus_per_run, runs_per_gpu=args.runs_per_gpu)
    store, todo, decision = plan(study, workdir, other_versions, check_here=getattr(executor, "runs_here", True))
    total = decision["total"]
    print(f"study {study.name!r}: {total} runs, {total - len(todo)} already finished; store {store.path}")
    if decision["message"]:
        print(decision["message"])
    if decision["cleared"]:
        print(f"removed {len(decision['cleared'])} leftovers of killed processes: {', '.join(decision['cleared'])}")
    bar, update = _progress(todo, total - len(todo), total)
    with bar:
        summary = sweep(study, workdir, executor, on_result=update, other_versions="reuse")
    counts = {s: summary.count(s) for s in ("complete", "diverged", "failed", "busy", "lost")}
    print("sweep finished: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({summary.skipped} skipped)")
    return 1 if counts["failed"] else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep a study YAML and (unless --no-report) write its report."""
    from samscale.spec.study import load_study

    study = load_study(args.study, args.budget)
    workdir = args.out or DEFAULT_WORKDIR / study.name
    status = run_sweep(study, workdir, args)
    if not args.no_report:
        print(f"report: {_report(workdir)}")
    return status


def _report(workdir: Path, command: str | None = None, params: str | None = None) -> Path:
    from samscale.report.study_report import build_study_report

    return build_study_report(workdir, command=command or " ".join(["samscale", *map(shlex.quote, sys.argv[1:])]),
                              params=params)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild a study's report from its work directory."""
    print(_report(args.path, params=args.params))
    return 0


def cmd_rho_law(args: argparse.Namespace) -> int:
    """Fit log10 ρ* = a + b · log10(#params) per task over finished study folders and write the page."""
    from samscale.report.rho_law_page import write_rho_law

    if args.out is None and len(args.dirs) > 1:
        raise UsageError("several study folders need --out (the page's folder)")
    out = args.out if args.out is not None else Path(args.dirs[0]) / "rho-law"
    command = "samscale rho-law " + " ".join(shlex.quote(str(d)) for d in args.dirs) + f" --out {shlex.quote(str(out))}"
    print(write_rho_law(list(args.dirs), out, command=command))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run one of the paper's experiments at a budget, or list them."""
    from samscale.fileio import write_text
    from samscale.recipes import RECIPES, FunctionRecipe, check_data, get_recipe

    if args.plan:
        return _plan(args)
    if args.speedup is not None:
        raise UsageError("--speedup applies to --plan only")
    if args.list or not args.name:
        for name, recipe in RECIPES.items():
            print(f"{name:<20} {recipe.summary}")
        return 0
    recipe = get_recipe(args.name)
    _check_executor_options(args)
    out = Path(args.out or Path("results") / f"{args.name}-{args.budget}")
    if isinstance(recipe, FunctionRecipe):
        print(f"report: {recipe.run(args.budget, out, on_progress=print)}")
        return 0
    status, reports = 0, []
    studies = recipe.studies(args.budget)
    for folder, study in studies:
        missing = check_data(study)
        if missing:
            print(f"samscale: skipping {study.name} at budget {args.budget!r}: its data are not available here.")
            print(missing)
            continue
        status = max(status, run_sweep(study, out / folder, args))
        reports.append(_report(out / folder))
        print(f"report: {reports[-1]}")
    if not reports:
        return 2
    if any(folder for folder, _ in studies):  # a combined recipe: one index over its members' reports
        index = out / "index.md"
        write_text(index, "".join(f"- [{p.parent.parent.name}]({p.relative_to(out)})\n" for p in reports))
        print(f"index of reports: {index}")
    return status


def _plan(args: argparse.Namespace) -> int:
    """Print the cost of a recipe (or of every recipe) at a budget; trains nothing."""
    from samscale.recipes import RECIPES, get_recipe
    from samscale.recipes.plan import DEFAULT_SPEEDUP, plan_recipe

    speedup = DEFAULT_SPEEDUP if args.speedup is None else args.speedup
    if not (speedup > 0 and math.isfinite(speedup)):
        raise UsageError(f"--speedup must be a finite number > 0, got {args.speedup}")
    names = [args.name] if args.name else list(RECIPES)
    for name in names:
        get_recipe(name)
    for name in names:
        for plan in plan_recipe(name, args.budget, speedup):
            print("\n".join(plan.lines(speedup)))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Hessian analysis of a run or checkpoint; prints its headline numbers."""
    from samscale.report.run_analysis import analyze_target
    from samscale.spec.catalog import ANALYSIS_NAMES

    unknown = [name for name in args.what.split(",") if name not in ANALYSIS_NAMES]
    if unknown:
        raise UsageError(f"--what: unknown analyses {unknown}; valid: {','.join(ANALYSIS_NAMES)}")
    _positive("--n-examples", args.n_examples)
    results = analyze_target(args.target, workdir=args.workdir, what=args.what.split(","),
                             n_examples=args.n_examples, out=args.out)
    for name, value in results["scalars"].items():
        print(f"{name:<24} {value:.6g}" if isinstance(value, float) else f"{name:<24} {value}")
    print(f"written: {results['json']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="samscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def workdir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="folder of the run store and checkpoints")

    p = sub.add_parser("train", help="train one run from a RunSpec YAML")
    p.add_argument("config", type=Path, help="RunSpec YAML file (see examples/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. optim.rho=0.1")
    p.add_argument("--study", default=None, help="also list the run under this study name")
    p.add_argument("--threads", type=int, default=None, help="torch threads for this run (default: torch's choice)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train this run data-parallel on N processes (runtime.nproc; gloo on CPU, NCCL on CUDA; "
                        "optim.sam_mode picks global or per-device SAM); N > 1 is part of the run's identity")
    workdir_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="table of the runs in a store")
    p.add_argument("--study", default=None, help="only the runs of this study")
    p.add_argument("--status", default=None, choices=("pending", "running", "complete", "diverged", "failed"),
                   help="only the runs with this status")
    workdir_option(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("models", help="the paper's model ladders with parameter counts")
    p.add_argument("--family", default=None, help="only this family's ladder (default: all)")
    p.set_defaults(func=cmd_models)

    def executor_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--executor", choices=("local", "serial", "ray", "ensemble"), default="local",
                       help="where runs train: a local process pool (default), this process, Ray, or ensemble "
                            "(runs differing only in seed and optimizer trained as one batched model)")
        p.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: one per core, or one per GPU slot on a GPU host)")
        p.add_argument("--threads", type=int, default=None, help="torch threads per worker / CPUs per Ray task")
        p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
        p.add_argument("--gpus-per-run", type=float, default=0.0,
                       help="GPUs per run: Ray (fractions allowed; default none) and local pools (whole GPUs; "
                            "default 1 on a GPU host, each worker sees only its own through CUDA_VISIBLE_DEVICES)")
        p.add_argument("--runs-per-gpu", type=int, default=DEFAULT_RUNS_PER_GPU,
                       help=f"local pools on a GPU host: runs sharing one GPU at a time (default {DEFAULT_RUNS_PER_GPU})")
        versions = p.add_mutually_exclusive_group()
        versions.add_argument("--reuse-other-versions", action="store_true",
                              help="keep finished runs that another code version produced (default: refuse)")
        versions.add_argument("--rerun-other-versions", action="store_true",
                              help="train finished runs of another code version again with this code")

    p = sub.add_parser("sweep", help="run a study's grid resumably")
    p.add_argument("study", type=Path, help="study YAML file (see examples/)")
    p.add_argument("--budget", default=None, help="one of the study's budgets (e.g. smoke, cpu, paper)")
    p.add_argument("--out", type=Path, default=None, help="work directory (default: runs/STUDY_NAME)")
    p.add_argument("--no-report", action="store_true", help="do not write the report after the sweep")
    executor_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="build the report of a study's work directory")
    p.add_argument("path", type=Path, help="the study's work directory (holds study.yaml and samscale.db)")
    p.add_argument("--params", choices=("total", "nonzero"), default=None,
                   help="x-axis: all parameters, or the non-zero ones of pruned runs (default: the study's choice)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("rho-law", help="fit ρ* = a · #params^b per task over finished study folders")
    p.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="finished study folders (study.yaml + store)")
    p.add_argument("--out", type=Path, default=None, help="page folder (default: DIR/rho-law for one DIR)")
    p.set_defaults(func=cmd_rho_law)

    p = sub.add_parser("reproduce", help="reproduce one of the paper's experiments")
    p.add_argument("name", nargs="?", help="recipe name (see --list)")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("--budget", choices=("smoke", "cpu", "paper"), default="cpu",
                   help="smoke (under a minute), cpu (minutes on a laptop) or paper (the paper's protocol)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: results/NAME-BUDGET)")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: print the runs, data, device-hours, memory and disk (every recipe if no NAME)")
    p.add_argument("--speedup", type=float, default=None, metavar="X",
                   help="--plan: device speed over one CPU thread here (default: the stated assumption)")
    executor_options(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("analyze", help="Hessian analysis of a trained run or checkpoint")
    p.add_argument("target", help="run id (or unique prefix) in --workdir, or a checkpoint path")
    p.add_argument("--what", default="lambda_max,trace,moments", help="comma list: lambda_max,trace,moments,density")
    p.add_argument("--n-examples", type=int, default=512, help="training examples the Hessian is taken over")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: WORKDIR/analysis/RUN_ID)")
    workdir_option(p)
    p.set_defaults(func=cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `samscale` command; returns the exit status (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"samscale {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ConfigError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"samscale: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
