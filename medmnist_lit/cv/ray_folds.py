"""``cv --cv.executor ray``: the folds in chunks, each chunk a Ray task, merged as if they had run here.

Each chunk is what the local engine does with those folds (one fold-parallel pass, or the folds one after another
when the setup needs that), so every fold gets exactly the result it gets locally: a fold's result never depends
on which other folds train with it. The driver puts the loaded dataset (images, labels, ids, split ...) in Ray's
object store once; every task builds its DataModule around that object (shared memory on its node, never decoded
again, never pickled per task). Tasks write their folds' directories under the run root, which every node must see
(checked at start); the driver writes ``folds.csv``, ``oof.csv`` and ``summary.json`` from the results, in fold
order, as the local engine does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmnist_lit.cv.folds import TrainerRecipe
from medmnist_lit.data.fold import Fold
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.splits.split import Split
from medmnist_lit.training.fit import RunResult
from medmnist_lit.utils.ray_runtime import RayOptions, check_shared_root, connect, import_ray, put

log = logging.getLogger("medmnist_lit")

__all__ = ["ChunkJob", "LoadedData", "chunk_size", "loaded_data", "train_on_ray"]

#: Trains folds the way the local engine does: ``train(template, datamodule, recipe, run_dir, folds, checkpoint=)``.
Engine = Callable[..., Iterator[tuple[Fold, RunResult]]]

ADDRESS_FLAG = "--cv.ray_address"
EXECUTOR_FLAG = "--cv.executor ray"
SHARED_ROOT_REMEDY = (
    "put the run on a filesystem every node mounts (--trainer.logger.init_args.save_dir), or use --cv.executor local"
)


@dataclass(frozen=True)
class LoadedData:
    """What a DataModule loaded, as one object-store object: the tasks' DataModules serve it as it is."""

    dataset: ImageSet
    split: Split
    external: ImageSet | None
    fingerprint: str | None


@dataclass
class ChunkJob:
    """What every chunk task shares: the model template, the DataModule's options, the Trainer recipe, the engine."""

    template: Any
    datamodule_class: Any  # the DataModule class: it builds one around the loaded data (``around``)
    data_hparams: dict[str, Any]
    recipe: TrainerRecipe
    run_dir: Path
    train: Engine
    checkpoint: str


def loaded_data(datamodule: Any) -> LoadedData:
    """The loaded data of ``datamodule``; a memory-mapped cache is read into plain arrays for the object store."""
    data = datamodule.dataset.plain()
    external = datamodule.external if getattr(datamodule, "test_source", None) else None
    return LoadedData(data, datamodule.split, external, datamodule.fingerprint)


def chunk_size(n_folds: int, per_pass: int, slots: int, override: int | None = None) -> int:
    """Folds per Ray task: ``override``, else ``n_folds`` spread over the ``slots`` tasks that run at once.

    At most ``per_pass`` (what one fold-parallel pass holds), so that each task is one pass.
    """
    if override is not None:
        if override < 1:
            raise ValueError(f"cv.chunk_size must be at least 1, got {override}")
        return override
    return max(1, min(per_pass, math.ceil(n_folds / max(1, slots))))


def _train_chunk(job: ChunkJob, data: LoadedData, folds: list[tuple[int, int]]) -> list[tuple[int | None, RunResult]]:
    """In a Ray task: the folds ``(number, seed)`` trained by the local engine on a DataModule around ``data``."""
    datamodule = job.datamodule_class.around(
        data.dataset, job.data_hparams, split=data.split, external=data.external, fingerprint=data.fingerprint
    )
    values = [datamodule.make_fold(number, seed=seed, stream=True) for number, seed in folds]
    outcomes = job.train(job.template, datamodule, job.recipe, job.run_dir, values, checkpoint=job.checkpoint)
    return [(fold.number, result) for fold, result in outcomes]


def _span(folds: list[Fold]) -> str:
    return f"{folds[0].number}–{folds[-1].number}" if len(folds) > 1 else str(folds[0].number)


def train_on_ray(
    job: ChunkJob,
    datamodule: Any,
    folds: list[Fold],
    options: RayOptions,
    *,
    per_pass: int,
    chunk: int | None = None,
) -> Iterator[tuple[Fold, RunResult]]:
    """Train ``folds`` in chunks on Ray; yield each fold with its result, in the order of ``folds``.

    Args:
        job: What every task needs; ``job.run_dir`` must be absolute.
        datamodule: The driver's DataModule (its loaded data goes to the object store once).
        folds: The stream folds to train (made by ``datamodule.make_fold``).
        options: Where Ray is and what each chunk reserves.
        per_pass: Most folds one pass of the engine holds (the default chunk size's cap).
        chunk: Folds per task, overriding the default.

    Raises:
        ValueError: Ray is missing or unreachable, or no node has the resources a chunk needs.
        OSError: A node cannot see or write the run root.
    """
    started = connect(options, ADDRESS_FLAG, EXECUTOR_FLAG)  # first: it sets what Ray reads when imported
    ray = import_ray(EXECUTOR_FLAG)
    pending: dict[Any, int] = {}
    try:
        capacity = ray.cluster_resources()
        slots = []
        for kind, need in (("CPU", options.cpus_per_run), ("GPU", options.gpus_per_run)):
            if need > capacity.get(kind, 0):
                flag = f"--cv.{kind.lower()}s_per_chunk"
                raise ValueError(f"{flag} {need:g}: the Ray cluster has {capacity.get(kind, 0):g} {kind}(s)")
            if need > 0:
                slots.append(int(capacity[kind] // need))
        check_shared_root(job.run_dir, SHARED_ROOT_REMEDY)
        size = chunk_size(len(folds), per_pass, min(slots, default=1), chunk)
        chunks = [folds[i : i + size] for i in range(0, len(folds), size)]
        data = put(loaded_data(datamodule))  # once: each task maps it from its node's shared memory
        remote = ray.remote(_train_chunk).options(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            max_retries=options.max_retries,  # worker or node death only; an error of the training is raised
            retry_exceptions=False,
        )
        log.info("%d folds in %d Ray task(s) of up to %d folds", len(folds), len(chunks), size)
        began = time.perf_counter()
        for index, part in enumerate(chunks):
            pending[remote.remote(job, data, [(f.number, f.seed) for f in part])] = index
        done: dict[int, list[tuple[int | None, RunResult]]] = {}
        following = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # Ctrl-C gets through
            for ref in ready:
                index = pending.pop(ref)
                try:
                    done[index] = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # the training itself failed: its own error
                    raise err.as_instanceof_cause() from None
                except ray.exceptions.RayError as err:
                    first = (str(err).strip().splitlines() or ["no reason given"])[0]
                    raise OSError(
                        f"cv.executor ray: the task of folds {_span(chunks[index])} failed "
                        f"{options.max_retries + 1} time(s) ({type(err).__name__}: {first})"
                    ) from None
                log.info("folds %s done on Ray (%.1f s)", _span(chunks[index]), time.perf_counter() - began)
            while following in done:
                by_number = {fold.number: fold for fold in chunks[following]}
                for number, result in done.pop(following):
                    yield by_number[number], result
                following += 1
    finally:
        # Ctrl-C or an error: nothing may go on running. Disconnecting ends this driver's job and Ray kills its
        # tasks; a connection that stays (the Python API's own Ray) cancels them. Not force=True: Ray 2.60 can
        # abort the driver when a force-cancelled task completes at the same time.
        for ref in pending if not started else ():
            ray.cancel(ref)
        if started:  # stops a local Ray; leaves a joined cluster running
            ray.shutdown()
