"""Experiment specs of ``medmnist-lit batch``: load a YAML spec, expand it into runs, validate every run.

A spec names a batch, a ``base`` config, the variants (``runs:`` and/or ``grid:``) and the ``seeds``::

    name: optimizers
    command: fit                        # default command of every run: fit or cv
    base: {model: {head: mlp}, trainer: {max_epochs: 10}}   # or a config file (relative to the spec or cwd)
    seeds: [0, 1, 2]                    # each sets seed_everything and data.seed
    baseline: sgd                       # variant the others are compared with (default: the first one)
    metric: val/acc                     # default val/acc
    runs:                               # named override sets (dotted keys); optional per-run command
      - {name: sgd, optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01}}}
      - {name: adam, optimizer.class_path: torch.optim.Adam, optimizer.init_args.lr: 0.001}
    grid:                               # cartesian product, crossed with every named run
      data.batch_size: [16, 64]
    references: {citation: ..., key: data.source, values: {...}}   # published scores: batch.references

Variants are every named run × every grid point; a run's config is ``base``, then the run's overrides, then the
grid point, then the command-line overrides, then the seed. A mapping value replaces the whole sub-config at its
key (``optimizer: {...}`` drops the base's optimizer arguments); a dotted key changes one value inside it, so a
grid over ``optimizer.init_args.lr`` applies to each run's optimizer. Variant names are the run's name and
``key=value`` per grid key (the last component of the dotted key), joined by ``__``, e.g. ``adam__batch_size=16``;
run names append the seed: ``adam__batch_size=16__seed0``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmnist_lit.batch.references import References, parse_references
from medmnist_lit.utils.config_files import load_mapping, load_yaml
from medmnist_lit.utils.dotted import get_dotted, set_dotted

log = logging.getLogger("medmnist_lit")

SPEC_KEYS = ("name", "description", "command", "base", "grid", "runs", "seeds", "baseline", "metric", "references")
RUN_KEYS = ("name", "command", "description")
BATCH_COMMANDS = ("fit", "cv")
SEED_KEYS = ("seed_everything", "data.seed")
LOGGER_KEY = "trainer.logger"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
_MAX_NAME = 100
_SPEC_EXAMPLE = "a mapping such as `{name: x, base: config.yaml, runs: [{name: a}], seeds: [0]}`"


@dataclass(frozen=True)
class Run:
    """One run of a batch: a ``fit`` or ``cv`` with a complete config.

    Attributes:
        name: ``<variant>__seed<seed>``; also the run directory's name.
        variant: The variant (run names without the seed); seeds of a variant are grouped in the tables.
        seed: Sets ``seed_everything`` and ``data.seed``.
        command: ``fit`` or ``cv``.
        config: The full config handed to the command (its logger writes to the run directory).
        varied: Dotted key → value of what this variant sets (named-run overrides and the grid point).
    """

    name: str
    variant: str
    seed: int
    command: str
    config: dict[str, Any]
    varied: dict[str, Any]

    @property
    def config_hash(self) -> str:
        """Hash of the command and config without the logger (where a run writes is not what it computes)."""
        return config_hash(self.command, self.config)


@dataclass
class BatchSpec:
    """An expanded, validated spec."""

    name: str
    path: Path
    root: Path
    runs: list[Run]
    variants: list[str]
    varied_keys: list[str]
    seeds: list[int]
    metric: str
    baseline: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    references: References | None = None  # published scores shown beside ours (:mod:`.references`)

    @property
    def directory(self) -> Path:
        """``<root>/<name>``: the batch directory holding one directory per run."""
        return self.root / self.name

    def run_dir(self, run: Run) -> Path:
        """The directory of ``run``."""
        return self.directory / run.name


def config_hash(command: str, config: Mapping[str, Any]) -> str:
    """Stable short hash of what a run computes: its command and config minus ``trainer.logger``."""
    stripped = copy.deepcopy(dict(config))
    stripped.get("trainer", {}).pop("logger", None)
    text = json.dumps({"command": command, "config": stripped}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def overlaps(a: str, b: str) -> bool:
    """Whether dotted keys ``a`` and ``b`` are equal or one lies inside the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def parse_overrides(args: Iterable[str]) -> dict[str, Any]:
    """``["--data.source", "X", "--trainer.max_epochs=5"]`` → ``{"data.source": "X", "trainer.max_epochs": 5}``.

    Values are read as YAML (``5`` is an int, ``null`` is None, ``[16, 32]`` a list), as on the fit command line.
    """
    items, overrides = list(args), {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) < 3:
            raise ValueError(f"expected a --key value override, got {item!r}")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ValueError(f"override --{key} needs a value")
            i += 1
            value = items[i]
        overrides[key] = _yaml_value(value)
        i += 1
    return overrides


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ---------------------------------------------------------------------------------------------- names
def _fmt(value: Any) -> str:
    """A compact, readable rendering of a value for run names."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_fmt(v) for v in value) or "empty"
    if isinstance(value, Mapping):
        if "class_path" in value:
            head = str(value["class_path"]).rsplit(".", 1)[-1]
            args = value.get("init_args") or {}
            return "-".join([head, *(f"{k}{_fmt(v)}" for k, v in args.items())])
        return "-".join(f"{k}{_fmt(v)}" for k, v in value.items())
    return str(value)


def display(value: Any) -> str:
    """How a varied value is shown in tables: ``SGD(lr=0.01, momentum=0.9)``, ``[512, 512]``, ``0.001``."""
    if isinstance(value, Mapping) and "class_path" in value:
        args = ", ".join(f"{k}={display(v)}" for k, v in (value.get("init_args") or {}).items())
        return f"{str(value['class_path']).rsplit('.', 1)[-1]}({args})"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={display(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(display(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def safe_name(text: str) -> str:
    """Filesystem-safe: letters, digits and ``._=+-``; long names are shortened with a hash suffix."""
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-.") or "run"
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return name


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last component of each dotted key, or the whole key where two keys share their last component."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


# ----------------------------------------------------------------------------------------------- load
def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _load_base(value: Any, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    if isinstance(value, str):
        for candidate in (path.parent / value, Path(value)):
            if candidate.is_file():
                return load_mapping(candidate, what=f"{path}: base config")
        raise _fail(path, f"base config {value!r} not found (relative to {path.parent} or the current directory)")
    raise _fail(path, f"base must be a mapping or a config file path, got {value!r}")


def _seeds(value: Any, path: Path, label: str = "seeds") -> list[int]:
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _fail(path, f"{label} must be a non-empty list of non-negative integers, got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, f"{label} has duplicates: {seeds}")
    return list(seeds)


def _named_runs(value: Any, path: Path, default_command: str) -> list[tuple[str | None, str, dict[str, Any]]]:
    if value is None:
        return [(None, default_command, {})]
    if not isinstance(value, list) or not value:
        raise _fail(path, "runs must be a non-empty list of mappings with a name")
    runs, names = [], set()
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise _fail(path, f"runs[{i}] needs a name (a mapping with name: and dotted-key overrides)")
        name = entry["name"]
        if not _SAFE_NAME.fullmatch(name) or len(name) > _MAX_NAME:
            raise _fail(path, f"run name {name!r} must be letters, digits and ._=+- (at most {_MAX_NAME})")
        if name in names:
            raise _fail(path, f"two runs are named {name!r}")
        names.add(name)
        command = entry.get("command", default_command)
        if command not in BATCH_COMMANDS:
            raise _fail(path, f"run {name!r}: command must be one of {list(BATCH_COMMANDS)}, got {command!r}")
        overrides = {k: v for k, v in entry.items() if k not in RUN_KEYS}
        runs.append((name, command, overrides))
    return runs


def _grid(value: Any, path: Path) -> list[dict[str, Any]]:
    if value is None:
        return [{}]
    if not isinstance(value, Mapping) or not value:
        raise _fail(path, "grid must be a mapping of dotted keys to lists of values")
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid key {key!r} needs a non-empty list of values, got {values!r}")
    keys = list(value)
    return [dict(zip(keys, point, strict=True)) for point in itertools.product(*(value[k] for k in keys))]


def load_spec(
    path: str | Path,
    *,
    root: str | Path = "lightning_logs",
    overrides: Mapping[str, Any] | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> BatchSpec:
    """Read and expand a spec (no validation against the parsers: see :func:`validate`).

    Args:
        path: The spec file.
        root: Directory holding batch directories.
        overrides: Dotted key → value applied to every run (after runs and grid, before seeds).
        seeds: Replace the spec's seeds.
        name: Replace the spec's name (a separate batch directory).

    Raises:
        ValueError: Naming the spec file and the offending key, run or value.
    """
    path = Path(path)
    spec = load_yaml(path, what="batch spec", example=_SPEC_EXAMPLE)
    if not isinstance(spec, Mapping):
        raise _fail(path, "a spec is a mapping with name, base, runs and/or grid, seeds, ...")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise _fail(path, f"unknown spec key {unknown[0]!r} (allowed: {', '.join(SPEC_KEYS)})")
    batch_name = name or spec.get("name") or path.stem
    if not isinstance(batch_name, str) or not _SAFE_NAME.fullmatch(batch_name):
        raise _fail(path, f"name {batch_name!r} must be letters, digits and ._=+-")
    command = spec.get("command", "fit")
    if command not in BATCH_COMMANDS:
        raise _fail(path, f"command must be one of {list(BATCH_COMMANDS)}, got {command!r}")
    metric = spec.get("metric", "val/acc")
    if not isinstance(metric, str) or "/" not in metric:
        raise _fail(path, f"metric must look like val/acc or test/loss, got {metric!r}")
    base = _load_base(spec.get("base"), path)
    seed_list = _seeds(spec.get("seeds", [0]), path) if seeds is None else _seeds(seeds, path, "--seeds")
    named = _named_runs(spec.get("runs"), path, command)
    points = _grid(spec.get("grid"), path)
    grid_keys = list(points[0])
    overrides = dict(overrides or {})

    for key in SEED_KEYS:
        if key in grid_keys or any(key in o for _, _, o in named) or key in overrides:
            raise _fail(path, f"{key} is set by seeds: (or --seeds); do not set it in runs, grid or overrides")
    for run_name, _, run_overrides in named:
        for key in run_overrides:
            clash = next((g for g in grid_keys if key == g or key.startswith(g + ".")), None)
            if clash is not None:
                raise _fail(path, f"run {run_name!r} sets {key!r}, which the grid key {clash!r} always replaces")
    for key in overrides:
        touched = [k for k in [*grid_keys, *(k for _, _, o in named for k in o)] if overlaps(key, k)]
        if touched:
            log.warning("override --%s also sets what the spec varies (%s): variants may not differ", key, touched[0])

    short = _short_keys(grid_keys)
    variants: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for run_name, run_command, run_overrides in named:
        for point in points:
            parts = ([run_name] if run_name else []) + [f"{short[k]}={_fmt(v)}" for k, v in point.items()]
            variant = safe_name("__".join(parts)) if parts else "base"
            if variant in variants:
                raise _fail(path, f"two variants are both named {variant!r}; give them distinct runs: names")
            config = copy.deepcopy(base)
            try:
                for key, value in [*run_overrides.items(), *point.items(), *overrides.items()]:
                    set_dotted(config, key, value)
            except ValueError as err:
                raise _fail(path, f"variant {variant!r}: {err}") from None
            variants[variant] = (run_command, config, {**run_overrides, **point})
    if spec.get("baseline") is not None and spec["baseline"] not in variants:
        raise _fail(path, f"baseline {spec['baseline']!r} is not a variant (variants: {', '.join(variants)})")
    baseline = spec.get("baseline") or (next(iter(variants)) if len(variants) > 1 else None)

    root = Path(root)
    runs = []
    for seed in seed_list:  # seed-major: a partial batch already compares every variant at the first seed
        for variant, (run_command, config, varied) in variants.items():
            run_name = f"{variant}__seed{seed}"
            full = copy.deepcopy(config)
            full["seed_everything"] = seed
            set_dotted(full, "data.seed", seed)
            set_dotted(
                full,
                LOGGER_KEY,
                {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {
                        "save_dir": str(root),
                        "name": batch_name,
                        "version": run_name,
                        "default_hp_metric": False,
                    },
                },
            )
            runs.append(Run(run_name, variant, seed, run_command, full, copy.deepcopy(varied)))
    varied_keys = list(dict.fromkeys(k for _, _, v in variants.values() for k in v))
    shown = {k: [display(get_dotted(c, k, "(default)")) for _, c, _ in variants.values()] for k in varied_keys}
    references = parse_references(spec.get("references"), path, shown)  # as the tables show the values
    return BatchSpec(
        batch_name, path, root, runs, list(variants), varied_keys, seed_list, metric, baseline, overrides, references
    )


def validate(spec: BatchSpec) -> None:
    """Parse every run's config with the real ``fit``/``cv`` parser before anything runs.

    Raises:
        ValueError: Naming the spec, the run and the parser's message (which names the key).
    """
    from medmnist_lit.lightning_cli import build_cli

    parsers = {}
    errors: list[str] = []
    for run in spec.runs:
        if run.command not in parsers:
            parsers[run.command] = build_cli(run.command, {}, parse_only=True).parser
        try:
            parsers[run.command].parse_object(copy.deepcopy(run.config))
        except (argparse.ArgumentError, ValueError, TypeError) as err:
            errors.append(f"run {run.name!r} ({run.command}): {err}")
        else:
            reason = _several_processes(run.config.get("trainer") or {})
            if reason:
                errors.append(
                    f"run {run.name!r} ({run.command}): {reason} cannot run inside a batch (Lightning's ddp launcher "
                    "re-runs the command line, here the batch itself); run it alone with `medmnist-lit "
                    f"{run.command}`, or use one device per run (--executor ray --ray.gpus_per_run 1)"
                )
        if len(errors) >= 3:
            break
    if errors:
        raise ValueError(f"{spec.path}: invalid config\n" + "\n".join(errors))


def _several_processes(trainer: Mapping[str, Any]) -> str | None:
    """What in ``trainer`` asks for a multi-process run (explicit devices or nodes), if anything."""
    from medmnist_lit.cv.fold_parallel import several_devices

    devices = trainer.get("devices", "auto")
    if devices not in ("auto", -1, "-1") and several_devices({"devices": devices}):
        return f"trainer.devices={devices!r}"
    nodes = trainer.get("num_nodes", 1)
    if nodes not in (None, 1, "1"):
        return f"trainer.num_nodes={nodes!r}"
    return None
