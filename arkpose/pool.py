"""The "pool" launcher: an ablation's (row, seed) jobs in parallel worker processes on this
machine (``--launcher pool --jobs N``, the laptop preset's default).

Why: on a 2-core laptop one 2-thread process leaves a core idle whenever it runs
single-threaded work (augmenting and rendering batches, a fifth of a regular row's epoch;
decoding, matching, the error analysis), and the adaptive convolution's sampling barely
gains from a second thread. Two 1-thread workers keep both cores busy: two laptop trainings
take 1.6-1.7x less wall time than one after the other in a 2-thread process
(docs/cluster.md, "The pool"; tests/benchmarks/bench_pool.py).

Each worker runs whole *groups*: the rows of one seed that train on the same batches (the
same :func:`arkpose.data.datasets.sample_settings`; Table 4's baseline and +guidance, or
+tradeoff and +adaptive), in plan order, with the rows that reuse them (+scoring). So a
worker's in-process batch cache (``launch.batch_cache_gb``, per worker) serves a group's
second row as it does in one process. Each job trains, scores, evaluates and analyses as
:func:`arkpose.ablate.run_job` does in-process; the driver collects the results in plan order.

Threads: each worker runs ``ARKPOSE_THREADS // jobs`` threads (at least 1), whatever the
schedule, so a run's numbers do not depend on which worker ran it or when; they can differ
in the last float bits from a run with another thread count (``done.json`` records the
threads). Larger groups are started first, and the last group is split by trained row
(both keep the last worker from running alone). A failing job stops the pool from starting
new groups; the running ones finish (every step resumes), then the error is raised naming
the job.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from arkpose import runtime
from arkpose.ablate import Job, run_job
from arkpose.provenance import digest
from arkpose.train.signals import TrainingInterrupted

# What run_job returns: ({quality: stats}, eval folder, {quality: source folder}, scorer).
Outcome = tuple[dict, Path, dict, "Path | None"]


class PoolJobFailed(RuntimeError):
    """A job of a worker process raised; the message names it and the error."""


def worker_threads(jobs: int) -> int:
    """Threads of each worker: an even share of ``ARKPOSE_THREADS``, at least one."""
    return max(1, runtime.num_threads() // max(1, jobs))


def group_jobs(jobs: list[Job], workers: int = 1) -> list[list[int]]:
    """Indices into ``jobs`` grouped by (seed, training batches), a reusing row with the row
    it reuses; groups in first-appearance order, jobs in plan order inside each. Ordered
    for the pool: groups that train an adaptive row first, then larger groups. With more
    groups than ``workers``, the last group is split into one group per trained row (with
    the rows that reuse it): the other workers would otherwise sit idle while one runs it
    whole, and its rows only lose the shared batches (bit-equal weights either way)."""
    from arkpose.data.datasets import sample_settings  # lazy: the datasets import torch

    groups: dict[str, list[int]] = {}
    home: dict[Path, str] = {}  # a trained folder -> its group
    for index, job in enumerate(jobs):
        key = home.get(job.train_folder) if not job.trains else digest(sample_settings(job.cfg))
        if key is None:  # a reuse whose trained row is not planned: a group of its own
            key = f"reuse:{job.folder}"
        home[job.folder] = key
        groups.setdefault(key, []).append(index)
    ordered = list(groups.values())
    # The adaptive rows train ~1.7x longer; starting the longest groups first keeps the
    # end of the run from leaving one worker alone.
    ordered.sort(key=lambda g: (-sum(jobs[i].trains and jobs[i].cfg.model.adaptive for i in g),
                                -sum(jobs[i].trains for i in g)))
    if len(ordered) > workers > 1:
        last: dict[Path, list[int]] = {}
        for i in ordered.pop():
            last.setdefault(jobs[i].train_folder, []).append(i)
        ordered.extend(last.values())
    return ordered


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_group(jobs: list[Job], root: Path, max_images: int, analyse: bool) -> list[Outcome]:
    """One worker's share: ``jobs`` (one group) in order, as in-process."""
    train_digests: dict[Path, str] = {}
    return [run_job(job, root, train_digests, max_images, analyse, _log, False) for job in jobs]


def run_jobs(jobs: list[Job], root: Path, max_images: int, analyse: bool, workers: int,
             log: Callable[[str], None]) -> list[Outcome]:
    """Every job of ``jobs`` in ``workers`` processes; the outcomes in the order of ``jobs``."""
    groups = group_jobs(jobs, workers)
    threads = worker_threads(workers)
    workers = min(workers, len(groups))
    log(f"pool: {len(jobs)} jobs in {len(groups)} groups, {workers} worker process(es) of "
        f"{threads} thread(s)")
    outcomes: dict[int, Outcome] = {}
    failure: tuple[str, BaseException] | None = None
    context = multiprocessing.get_context("spawn")  # the driver may hold torch's threads
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=runtime.use_threads,
                                 initargs=(threads,)) as pool:
            pending = {pool.submit(_run_group, [jobs[i] for i in g], root, max_images, analyse): g
                       for g in groups}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in [f for f in pending if f in done]:  # in submission order
                    group = pending.pop(future)
                    labels = ", ".join(jobs[i].label for i in group)
                    if future.exception() is not None:
                        failure = failure or (labels, future.exception())
                        for other in pending:
                            other.cancel()  # those not started yet; running groups finish
                        continue
                    outcomes.update(zip(group, future.result()))
                    log(f"pool: done {labels} ({len(outcomes)}/{len(jobs)} jobs)")
                pending = {f: g for f, g in pending.items() if not f.cancelled()}
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: each saved its last.pt
        raise TrainingInterrupted(signal.SIGINT, root) from None
    if failure is not None:
        labels, error = failure
        if isinstance(error, TrainingInterrupted):
            raise error
        raise PoolJobFailed(f"a pool worker failed on {labels}: {type(error).__name__}: {error}. "
                            "Finished jobs are kept; run the same command again to resume") from error
    return [outcomes[i] for i in range(len(jobs))]
