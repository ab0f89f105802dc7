"""``medmnist-lit batch``: run every variant × seed of an experiment spec, resumably, and tabulate the results.

Every run writes ``<root>/<batch>/<run>/`` (a normal fit or cv run directory) plus ``record.json``. Re-running
the same command skips recorded runs, restarts interrupted ones from a clean directory and reruns failed ones
only with ``--retry-failed``. A run whose config no longer matches its record's hash stops the batch before
anything runs, unless ``--rerun-changed``. See :mod:`medmnist_lit.batch.spec` for the spec format.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmnist_lit.batch.ray_executor import RayOptions, run_on_ray
from medmnist_lit.batch.spec import BatchSpec, Run, display, load_spec, parse_overrides, validate
from medmnist_lit.batch.worker import Task, execute, run_pool
from medmnist_lit.jobs import INTERRUPTED, RECORD
from medmnist_lit.utils.dotted import get_dotted
from medmnist_lit.utils.files import make_dirs, read_json, write_json

log = logging.getLogger("medmnist_lit")

USAGE = """usage: medmnist-lit batch SPEC.yaml [options] [--dotted.key value ...]

Run every variant × seed of an experiment spec; re-run the same command to resume.

options:
  --workers N       runs at once, each in its own process (one GPU each when there are GPUs; default 1)
  --executor ray    run on Ray instead: a local Ray (loopback only), or the cluster at --ray.address
  --ray.address A   join a running Ray cluster (what `ray start --head` printed, or auto)
  --ray.cpus_per_run N, --ray.gpus_per_run F
                    resources each run reserves on Ray (default 1 CPU, 0 GPUs; fractions allowed)
  --ray.max_retries N
                    tries again a run whose Ray worker or node died, N times (default 2), then records it failed
  --dry-run         list the runs (name, command, status, varied values) and exit
  --retry-failed    run failed runs again (they are skipped otherwise)
  --rerun-changed   replace runs whose recorded config differs from the spec (an error otherwise)
  --root DIR        where batch directories go (default lightning_logs)
  --name NAME       batch directory name (default: the spec's name)
  --seeds LIST      replace the spec's seeds, e.g. --seeds [0,1]
  --KEY VALUE       any config override for every run, e.g. --data.source PATH --trainer.max_epochs 5
"""
_FLAGS = {"--dry-run": "dry_run", "--retry-failed": "retry_failed", "--rerun-changed": "rerun_changed"}
_VALUED = {"--workers": "workers", "--root": "root", "--name": "name", "--seeds": "seeds", "--executor": "executor"}
_RAY = {"--ray.address": "address", "--ray.cpus_per_run": "cpus_per_run", "--ray.gpus_per_run": "gpus_per_run"}
_RAY["--ray.max_retries"] = "max_retries"
_ERROR_CHARS = 400  # of a failed run's error on the console; its record holds all of it


@dataclass
class Options:
    """Parsed ``batch`` arguments."""

    spec: str
    workers: int = 1
    executor: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    dry_run: bool = False
    retry_failed: bool = False
    rerun_changed: bool = False
    root: str = "lightning_logs"
    name: str | None = None
    seeds: list[int] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_args(args: Sequence[str]) -> Options:
    """``SPEC [options] [--key value ...]`` → :class:`Options` (the spec comes first)."""
    items = list(args)
    if not items or items[0].startswith("-"):
        raise ValueError("batch needs a spec file first: medmnist-lit batch experiments/NAME.yaml [options]")
    options, rest, i = Options(items[0]), [], 1
    while i < len(items):
        flag, eq, inline = items[i].partition("=")
        if flag in _FLAGS and not eq:
            setattr(options, _FLAGS[flag], True)
        elif flag in _VALUED or flag in _RAY:
            if not eq and i + 1 >= len(items):
                raise ValueError(f"{flag} needs a value")
            value = inline if eq else items[i + 1]
            i += 0 if eq else 1
            if flag in _RAY:
                setattr(options.ray, _RAY[flag], _ray_value(flag, value))
            else:
                setattr(options, _VALUED[flag], value)
        else:
            rest.append(items[i])
        i += 1
    options.overrides = parse_overrides(rest)
    try:
        options.workers = int(options.workers)
    except ValueError:
        raise ValueError(f"--workers must be a positive integer, got {options.workers!r}") from None
    if options.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {options.workers}")
    if options.executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {options.executor!r}")
    if options.executor == "ray" and options.workers != 1:
        raise ValueError("--workers is for the local executor; on Ray, --ray.cpus_per_run sets how many runs fit")
    if options.executor == "local" and any(item.partition("=")[0] in _RAY for item in items):
        raise ValueError("--ray.* options need --executor ray")
    if isinstance(options.seeds, str):  # validated with the spec's own seeds (load_spec)
        options.seeds = parse_overrides(["--seeds", options.seeds])["seeds"]
    return options


def _ray_value(flag: str, value: str) -> Any:
    if flag == "--ray.address":
        return value
    kind, low = (int, 0) if flag == "--ray.max_retries" else (float, 0)
    try:
        number = kind(value)
    except ValueError:
        number = -1
    if number < low or (flag == "--ray.cpus_per_run" and number == 0):
        raise ValueError(f"{flag} must be a {'whole' if kind is int else 'positive'} number, got {value!r}")
    return number


# ------------------------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    """What each run's record says and what this invocation will run."""

    status: dict[str, str]  # done | failed | changed | interrupted | new
    todo: list[Run]
    attempts: dict[str, int]


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(_changed_keys(a, b, f"{prefix}{key}."))
        elif a != b:
            keys.append(f"{prefix}{key}: {display(a)} → {display(b)}")
    return keys


def make_plan(spec: BatchSpec, *, retry_failed: bool = False, rerun_changed: bool = False, strict: bool = True) -> Plan:
    """Read every run's record and decide what runs.

    Raises:
        ValueError: With ``strict``, recorded runs whose config changed, without ``rerun_changed`` (names them
            and the keys).
    """
    status, attempts, todo, changed = {}, {}, [], []
    for run in spec.runs:
        directory = spec.run_dir(run)
        record = None
        if (directory / RECORD).is_file():
            with contextlib.suppress(ValueError):  # unreadable: treated like an interrupted run
                record = read_json(directory / RECORD)
        if record is None:
            status[run.name] = "interrupted" if directory.exists() else "new"
        elif record.get("config_hash") != run.config_hash:
            status[run.name] = "changed"
            diff = [
                k for k in _changed_keys(record.get("config") or {}, run.config) if not k.startswith("trainer.logger")
            ]
            changed.append(f"{run.name} ({'; '.join(diff[:3]) or 'command'})")
        else:
            status[run.name] = "done" if record.get("status") == "ok" else "failed"
        attempts[run.name] = int(record.get("attempt", 0)) + 1 if record else 1
        if status[run.name] in ("interrupted", "new") or (
            (status[run.name] == "failed" and retry_failed) or (status[run.name] == "changed" and rerun_changed)
        ):
            todo.append(run)
    if changed and not rerun_changed and strict:
        listed = "\n  ".join(changed[:5]) + (f"\n  ... and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ValueError(
            f"{len(changed)} recorded run(s) in {spec.directory} were made with a different config:\n  {listed}\n"
            "pass --rerun-changed to replace them, or --name/--root for a separate batch directory"
        )
    return Plan(status, todo, attempts)


def _dry_run(spec: BatchSpec, plan: Plan) -> None:
    width = max(len(r.name) for r in spec.runs)
    print(f"batch {spec.name}: {len(spec.runs)} runs in {spec.directory}")
    for run in spec.runs:
        varied = ", ".join(f"{k}={display(v)}" for k, v in run.varied.items()) or "-"
        print(f"  {run.name:<{width}}  {run.command:<3}  {plan.status[run.name]:<11}  {varied}")
    counts = {s: list(plan.status.values()).count(s) for s in dict.fromkeys(plan.status.values())}
    print(f"would run {len(plan.todo)} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    if "changed" in counts and not any(plan.status[r.name] == "changed" for r in plan.todo):
        print("changed runs were recorded with another config: the batch refuses to run without --rerun-changed")


# -------------------------------------------------------------------------------------------- progress
def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class Progress:
    """The overall line: runs done / total, failures, elapsed time and ETA of the runs this invocation makes."""

    def __init__(self, spec: BatchSpec, plan: Plan) -> None:
        self.name, self.total, self.todo = spec.name, len(spec.runs), len(plan.todo)
        self.done = self.total - self.todo
        self.finished = self.failed = 0
        self.start = time.monotonic()

    def line(self) -> str:
        """``[name] 3/12 runs done, 1 failed · 0:42 elapsed · ETA 2:10``."""
        elapsed = time.monotonic() - self.start
        eta = _clock(elapsed / self.finished * (self.todo - self.finished)) if self.finished else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{self.name}] {self.done}/{self.total} runs done{failed} · {_clock(elapsed)} elapsed · ETA {eta}"

    def finish(self, record: dict[str, Any], metric: str, where: Path | None = None) -> str:
        """Count a finished run; the overall line with the run's outcome (a failure's error on one line)."""
        self.finished += 1
        self.done += 1
        if record["status"] != "ok":
            self.failed += 1
            error = " ".join(str(record.get("error") or "unknown error").split())
            error = error if len(error) <= _ERROR_CHARS else error[: _ERROR_CHARS - 1] + "…"
            details = "" if where is None else f" ({'traceback' if record.get('traceback') else 'record'} in {where})"
            return f"{self.line()} · FAILED {record['name']}: {error}{details}"
        value = record.get("metrics", {}).get(metric)
        score = f"{metric} {value:.4f}" if isinstance(value, float) else f"no {metric}"
        return f"{self.line()} · ok {record['name']}: {score} ({record.get('seconds', 0):.1f} s)"


# --------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def _batch_lock(directory: Path) -> Iterator[None]:
    """One batch process per directory: filelock's OS lock, released by the OS even after SIGKILL."""
    from filelock import FileLock, Timeout

    make_dirs(directory, "--root (or --name)")
    lock = FileLock(directory / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"another batch is running in {directory}; wait for it or stop it (Ctrl-C)") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[None]:
    """Mark Ctrl-C so a run that Lightning ends with ``sys.exit`` is not recorded as failed."""
    INTERRUPTED.clear()

    def handler(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    in_main = threading.current_thread() is threading.main_thread()  # only it may install signal handlers
    if in_main:
        signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def run_batch(spec: BatchSpec, plan: Plan, workers: int = 1, ray: RayOptions | None = None) -> int:
    """Execute ``plan.todo`` here, on ``workers`` processes or on Ray (``ray``); returns the exit status.

    Records (written here, whichever executor ran the run) and tables after every run, figures at the end.
    0: every run of the spec is recorded ok; 1: some failed; 130: interrupted (re-run to resume).
    """
    from medmnist_lit.batch.report import write_report, write_tables

    directory = spec.directory
    for stale in directory.glob(".*.tmp*"):  # temporary files of writes a SIGKILL cut short
        stale.unlink(missing_ok=True)
    write_json(directory / "batch.json", batch_manifest(spec))
    workers = min(workers, max(1, len(plan.todo)))
    quiet = workers > 1 or ray is not None
    tasks = [Task(run, str(spec.run_dir(run)), plan.attempts[run.name], quiet=quiet) for run in plan.todo]
    progress = Progress(spec, plan)
    bar = None

    def done(record: dict[str, Any]) -> None:
        write_json(directory / record["name"] / RECORD, record)  # the batch process is the single writer
        line = progress.finish(record, spec.metric, directory / record["name"] / RECORD)
        (log.warning if record["status"] != "ok" else log.info)(line)
        if bar is not None:
            bar.update(1)
        try:  # the record is safe on disk; a table problem must not stop the runs still to come
            write_tables(directory)
        except Exception as err:
            log.warning("could not update the tables (%s); `medmnist-lit report %s` rebuilds them", err, directory)

    interrupted = False
    try:
        with _interrupt_flag():
            if not quiet:
                for task in tasks:
                    log.info("%s · next: %s (%s)", progress.line(), task.run.name, task.run.command)
                    done(execute(task))
            else:
                from tqdm import tqdm

                where = "on Ray" if ray is not None else f"{workers} workers"
                log.info("%s · %s, console of each run in <run>/console.log", progress.line(), where)
                bar = tqdm(total=progress.total, initial=progress.done, desc=spec.name, unit="run", disable=None)
                if ray is not None:
                    run_on_ray(tasks, ray, done)
                else:
                    run_pool(tasks, workers, done)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    paths = write_report(directory)
    statuses = [status for status, _ in _statuses(spec)]
    print(f"{statuses.count('ok')}/{len(statuses)} runs ok; results: {', '.join(str(p) for p in paths)}")
    if interrupted:
        print("interrupted: re-run the same command to resume (finished runs are kept)", file=sys.stderr)
        return 130
    if "failed" in statuses:
        print("some runs failed (see results.md); rerun them with --retry-failed", file=sys.stderr)
        return 1
    return 0


def _statuses(spec: BatchSpec) -> list[tuple[str, str]]:
    out = []
    for run in spec.runs:
        path = spec.run_dir(run) / RECORD
        out.append((read_json(path).get("status", "failed") if path.is_file() else "missing", run.name))
    return out


def _setting(config: dict[str, Any], key: str) -> str:
    missing = object()
    value = get_dotted(config, key, missing)
    return "(default)" if value is missing else display(value)


def batch_manifest(spec: BatchSpec) -> dict[str, Any]:
    """``batch.json``: what the report needs to rebuild the tables from the run directories alone."""
    return {
        "name": spec.name,
        "spec": str(spec.path),
        "metric": spec.metric,
        "baseline": spec.baseline,
        "variants": spec.variants,
        "varied_keys": spec.varied_keys,
        "seeds": spec.seeds,
        "overrides": spec.overrides,
        # published scores shown beside ours: kept here so the tables do not depend on the spec file staying put
        "references": spec.references.to_json() if spec.references else None,
        "runs": [
            {
                "name": r.name,
                "variant": r.variant,
                "seed": r.seed,
                "command": r.command,
                "varied": r.varied,
                # what each varied key is in this run, also where another variant set it (the tables' columns)
                "settings": {k: _setting(r.config, k) for k in spec.varied_keys},
            }
            for r in spec.runs
        ],
    }


def batch_command(args: Sequence[str]) -> int:
    """``medmnist-lit batch``: validate the whole spec, then run what is not recorded yet."""
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from medmnist_lit.utils.console import setup_console

    setup_console()
    options = parse_args(args)
    spec = load_spec(
        options.spec, root=options.root, overrides=options.overrides, seeds=options.seeds, name=options.name
    )
    validate(spec)
    plan = make_plan(
        spec, retry_failed=options.retry_failed, rerun_changed=options.rerun_changed, strict=not options.dry_run
    )
    if options.dry_run:
        _dry_run(spec, plan)
        return 0
    with _batch_lock(spec.directory):
        return run_batch(spec, plan, options.workers, options.ray if options.executor == "ray" else None)
