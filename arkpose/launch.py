"""Where an ablation's trainings run: in the driver's process (``launch.launcher``
"inprocess", the default), in a pool of worker processes of the driver ("pool",
:mod:`arkpose.pool`: training, scoring, evaluation and analysis, a seed's related rows per
worker), as parallel local processes ("local") or as a SLURM job array ("slurm"), the last
two through submitit.

Each (row, seed) training is one job running :func:`arkpose.ablate.train_row`, the same
resumable training as in-process. The driver claims every run folder first (run identity,
:func:`arkpose.ablate.claim_training`), submits the trainings that have no ``done.json``,
and waits, printing a line whenever a job changes state; with ``launch.wait=false`` it
returns at once, and the same ``arkpose ablate`` command later collects what finished (a job
still queued or running is waited for, not submitted twice; a job that ended without
``done.json`` is submitted again, its last error line shown). Evaluations, analyses and
notebooks then run in the driver, as in-process.

Requeue: at a time limit or a preemption, SLURM (and submitit's local controller) sends
SIGUSR2. The job turns it into arkpose's own stop signal (SIGTERM), so the training saves
``last.pt`` at the end of the current step; then submitit's handler requeues the job, and
the requeued job resumes from ``last.pt``. Job files and logs live in ``<run root>/jobs/``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arkpose import ablate
from arkpose import config as config_lib
from arkpose.config import ConfigError, LaunchConfig
from arkpose.jsonio import write_json

if TYPE_CHECKING:  # submitit is imported only to launch (see make_executor)
    import submitit

LAUNCHERS = ("inprocess", "pool", "local", "slurm")  # submitted ones: LaunchConfig.submitted
JOBS_DIR = "jobs"
POLL_S = 2.0
# Job states after which a job will not write done.json any more (SLURM's and local's).
ENDED = {"FINISHED", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
         "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "INTERRUPTED", "NO PROCESS AND NO RESULT"}


class JobsPending(RuntimeError):
    """Trainings were submitted (``launch.wait=false``) or are still running elsewhere."""

    def __init__(self, count: int, root: Path):
        super().__init__(f"{count} training job(s) submitted or still running (logs: "
                         f"{root / JOBS_DIR}); run the same `arkpose ablate` command again to "
                         "collect them and evaluate")
        self.count = count


class JobsFailed(RuntimeError):
    """Training jobs ended without finishing; the message names each and its last error."""


def check(cfg: LaunchConfig) -> None:
    """Refuse launcher settings that cannot work, before anything is submitted."""
    if cfg.launcher not in LAUNCHERS:
        raise ConfigError(f"launch.launcher={cfg.launcher!r} is not one of {', '.join(LAUNCHERS)}; "
                          "e.g. --launcher local")
    for name in ("jobs", "gpus_per_job", "cpus_per_job", "time_min", "mem_gb"):
        if getattr(cfg, name) < (0 if name == "gpus_per_job" else 1):
            raise ConfigError(f"launch.{name}={getattr(cfg, name)} must be positive")
    if not cfg.batch_cache_gb >= 0:
        raise ConfigError(f"launch.batch_cache_gb={cfg.batch_cache_gb} must be >= 0 (0 = off)")


def slurm_parameters(cfg: LaunchConfig) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters for one training per job: one task per GPU
    (DDP across them), ``cpus_per_job`` CPUs per task."""
    params: dict[str, Any] = {
        "job_name": "arkpose-train", "time": cfg.time_min, "nodes": 1,
        "ntasks_per_node": max(1, cfg.gpus_per_job), "gpus_per_node": cfg.gpus_per_job,
        "cpus_per_task": cfg.cpus_per_job, "mem": f"{cfg.mem_gb}GB",
        "array_parallelism": cfg.jobs, "signal_delay_s": 120,
    }
    for key in ("partition", "account", "qos"):
        if getattr(cfg, key):
            params[key] = getattr(cfg, key)
    return params


def make_executor(cfg: LaunchConfig, folder: Path):
    """A submitit executor writing its job files under ``folder/<job id>/``."""
    import submitit  # lazy: submitit, only when a run is launched through it

    if cfg.launcher == "local":
        executor = submitit.LocalExecutor(folder=str(folder / "%j"))
        executor.update_parameters(timeout_min=cfg.time_min, signal_delay_s=30)
    else:
        executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=cfg.max_requeues)
        executor.update_parameters(**slurm_parameters(cfg))
    return executor


class TrainJob:
    """One (row, seed) training inside a submitit job (module doc: requeue). A callable
    class with a ``checkpoint`` method is what submitit requeues."""

    def __call__(self, cfg_dict: dict, out: str) -> str:
        import submitit  # lazy: submitit, only when a run is launched through it

        from arkpose import train  # lazy: torch (~1.3 s), needed inside the job only

        cfg = config_lib.from_dict(cfg_dict)
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per GPU: DDP, rendezvous from SLURM's variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue
        asked = []

        def stop_then_requeue(signum: int, frame: Any) -> None:
            asked.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)  # the training saves last.pt and stops

        signal.signal(signal.SIGUSR2, stop_then_requeue)
        try:
            ablate.train_row(cfg, Path(out), progress=False)
        except train.TrainingInterrupted:
            signal.signal(signal.SIGUSR2, requeue)
            if asked and callable(requeue):
                requeue(signal.SIGUSR2, None)  # exits the process; the requeued job resumes
            raise
        finally:
            signal.signal(signal.SIGUSR2, requeue)
        return out

    def checkpoint(self, cfg_dict: dict, out: str):
        import submitit  # lazy: submitit, only when a run is launched through it

        return submitit.helpers.DelayedSubmission(self, cfg_dict, out)


@dataclasses.dataclass
class Tracked:
    """A submitted training: its ablation job, submitit job, and the last state shown."""

    job: ablate.Job
    handle: submitit.Job
    state: str = ""


def _record_path(root: Path, job: ablate.Job) -> Path:
    return root / JOBS_DIR / f"{job.row.slug}-seed-{job.seed}.json"


def _last_error(handle) -> str:
    """The last non-empty line of a job's stderr (its traceback's last line)."""
    try:
        lines = [ln for ln in Path(handle.paths.stderr).read_text().splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (errors or lines or ["empty log"])[-1].strip()


def _reattach(cfg: LaunchConfig, root: Path, job):
    """The submitit job recorded for ``job`` by an earlier driver, if it may still run."""
    import submitit  # lazy: submitit, only when a run is launched through it

    path = _record_path(root, job)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("launcher") != cfg.launcher:
        return None
    folder = root / JOBS_DIR / "%j"
    if cfg.launcher == "slurm":
        handle = submitit.SlurmJob(folder=str(folder), job_id=record["job_id"])
        return None if handle.state.split(" ")[0] in ENDED else handle
    handle = submitit.LocalJob(folder=str(folder), job_id=record["job_id"])
    return handle if _state(handle) == "RUNNING" else None


def _pid_alive(pid: str) -> bool:
    """Whether process ``pid`` runs (a zombie, finished but not yet reaped, does not)."""
    try:
        os.kill(int(pid), 0)
        stat = Path(f"/proc/{int(pid)}/stat")
        return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")
    except (OSError, ValueError):
        return False


def _state(handle) -> str:
    """The job's scheduler state; a local job started by an earlier driver (no process
    handle here) by whether its controller, whose pid is its id, still runs."""
    import submitit  # lazy: submitit, only when a run is launched through it

    if isinstance(handle, submitit.LocalJob) and handle._process is None:
        # started by this process earlier (submitit keeps its handle) or by another driver
        process = submitit.local.local._PROCESSES.get(handle.job_id)
        if process is not None:
            return "RUNNING" if process.poll() is None else "FINISHED"
        return "RUNNING" if _pid_alive(handle.job_id) else "FINISHED"
    try:
        return str(handle.state).split(" ")[0]
    except Exception:  # a job whose scheduler entry is gone  # noqa: BLE001
        return "UNKNOWN"


def train_all(jobs: list, root: Path, cfg: LaunchConfig, log: Callable[[str], None],
              claim: Callable[..., str]) -> int:
    """Train every trained row of ``jobs`` through ``cfg.launcher``; returns how many are
    still unfinished (0 when waited for). Raises :class:`JobsFailed` when some ended without
    ``done.json``, after the others finished."""
    check(cfg)
    trained = [j for j in jobs if j.trains]
    for job in trained:
        claim(job, root, log, quiet_reuse=True)
    todo = [j for j in trained if not (j.folder / "done.json").is_file()]
    if not todo:
        return 0
    executor = make_executor(cfg, root / JOBS_DIR)
    running = [Tracked(j, h) for j in todo if (h := _reattach(cfg, root, j)) is not None]
    attached = {id(t.job) for t in running}
    queue = [j for j in todo if id(j) not in attached]
    for t in running:
        log(f"{t.job.label}: still {_state(t.handle).lower()} as job {t.handle.job_id}, waiting")

    def submit(batch: list) -> None:
        if not batch:
            return
        handles = []
        with executor.batch():  # one SLURM job array per batch
            for job in batch:
                handles.append(executor.submit(TrainJob(), config_lib.to_dict(job.cfg), str(job.folder)))
        for job, handle in zip(batch, handles):
            write_json(_record_path(root, job), {
                "job_id": handle.job_id, "launcher": cfg.launcher, "folder": str(job.folder),
                "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
            log(f"{job.label}: submitted as {cfg.launcher} job {handle.job_id} (log "
                f"{Path(handle.paths.stderr).relative_to(root)})")
            running.append(Tracked(job, handle))

    # SLURM queues the whole array itself (array_parallelism); local processes are started
    # cfg.jobs at a time.
    take = len(queue) if cfg.launcher == "slurm" else max(0, cfg.jobs - len(running))
    submit(queue[:take])
    queue = queue[take:]
    if not cfg.wait:
        return len(todo)
    failed = []
    while running:
        time.sleep(POLL_S)
        for t in list(running):
            state = _state(t.handle)
            if state != t.state:
                log(f"{t.job.label}: job {t.handle.job_id} {state.lower()}")
                t.state = state
            if state in ENDED or (t.job.folder / "done.json").is_file() and state != "RUNNING":
                running.remove(t)
                if not (t.job.folder / "done.json").is_file():
                    failed.append(f"{t.job.label} (job {t.handle.job_id}): {_last_error(t.handle)}")
        if queue and cfg.launcher == "local" and len(running) < cfg.jobs:
            take = cfg.jobs - len(running)
            submit(queue[:take])
            queue = queue[take:]
    if failed:
        raise JobsFailed(f"{len(failed)} training job(s) ended unfinished: " + "; ".join(failed)
                         + f". Logs: {root / JOBS_DIR}; run the same command again to resubmit them")
    return 0
