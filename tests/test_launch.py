"""Trainings as jobs (arkpose.launch): a requeued local job resumes and ends with the weights
of an uninterrupted run, the SLURM submission asks for what was requested, and the flags map
to the config. The local launcher's full smoke ablation is compared with the in-process one
in test_ablate_run.py."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from tiny_config import tiny_train_config

from arkpose import ablate, launch, train
from arkpose.cli import ablate as command
from arkpose.config import ConfigError, LaunchConfig


def _one_row_jobs(cfg, root: Path) -> list:
    definition = ablate.Ablation(name="t", rows=[ablate.Row("only")])
    return ablate.plan(definition, cfg, (0,), root)


def _task_pid(controller: int, timeout: float = 60.0) -> int:
    """The job's python process: the child of submitit's local controller."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise TimeoutError("the local job never started its task")


@pytest.mark.slow
def test_a_local_job_stopped_at_its_time_limit_is_requeued_and_resumes(synth_dir, tmp_path):
    cfg = tiny_train_config(synth_dir, batch_size=2, epochs=12)
    cfg.data.train_subset = 16
    root = tmp_path / "runs"
    jobs = _one_row_jobs(cfg, root)
    lines = []
    launch_cfg = LaunchConfig(launcher="local", jobs=1, wait=False, time_min=30)
    assert launch.train_all(jobs, root, launch_cfg, lines.append, ablate.claim_training) == 1
    record = (root / "jobs" / "only-seed-0.json").read_text()
    controller = int(json.loads(record)["job_id"])
    task = _task_pid(controller)
    metrics = jobs[0].folder / train.METRICS
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "the job never finished an epoch"
        time.sleep(0.05)
    os.kill(task, signal.SIGUSR2)  # what SLURM and submitit's local controller send before a time limit

    # A second driver finds the job still running (requeued), waits, and collects it.
    launch_cfg = LaunchConfig(launcher="local", jobs=1, wait=True, time_min=30)
    assert launch.train_all(jobs, root, launch_cfg, lines.append, ablate.claim_training) == 0
    assert any("still running as job" in line for line in lines)
    log = (jobs[0].folder / train.LOG_FILE).read_text()
    assert "resumed from" in log
    stderr = "".join(p.read_text() for p in (root / "jobs").rglob("*_log.err"))
    assert "Caught signal SIGUSR2" in stderr and stderr.count("resumed from") == 1
    assert (jobs[0].folder / ablate.DONE_FILE).is_file()

    # The interruption left no trace in the weights: same as one uninterrupted run.
    train.train(jobs[0].cfg, tmp_path / "straight", progress=False)
    interrupted = torch.load(jobs[0].folder / "last.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    assert interrupted.keys() == straight.keys()
    assert all(torch.equal(interrupted[k], straight[k]) for k in straight)


@pytest.mark.slow
def test_a_failed_job_is_reported_with_its_last_error_line_and_resubmitted(synth_dir, tmp_path):
    cfg = tiny_train_config(synth_dir, epochs=1)
    cfg.optim.amp = "bf16"  # passes the driver, refused by the training on a CPU
    root = tmp_path / "runs"
    jobs = _one_row_jobs(cfg, root)
    lines = []
    launch_cfg = LaunchConfig(launcher="local", jobs=1, time_min=30)
    with pytest.raises(launch.JobsFailed) as failed:
        launch.train_all(jobs, root, launch_cfg, lines.append, ablate.claim_training)
    message = str(failed.value)
    assert "only seed 0" in message and "ConfigError: optim.amp=bf16 needs a CUDA device" in message
    assert "run the same command again to resubmit" in message
    # The next call submits it again (the old job has ended), and fails the same way.
    with pytest.raises(launch.JobsFailed):
        launch.train_all(jobs, root, launch_cfg, lines.append, ablate.claim_training)
    assert sum("submitted as local job" in line for line in lines) == 2


def test_the_slurm_submission_asks_for_the_requested_resources(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    argv = ["--launcher", "slurm", "--partition", "gpu", "--gpus-per-job", "4", "--cpus-per-job",
            "10", "--time-min", "600", "--mem-gb", "128", "--account", "lab", "--qos", "high",
            "--jobs", "3"]
    overrides = command.launch_overrides(command.build_parser().parse_args(argv))
    cfg = ablate.presets.preset("smoke")
    ablate.config_lib.apply_overrides(cfg, overrides)
    assert cfg.launch == LaunchConfig(launcher="slurm", jobs=3, partition="gpu", gpus_per_job=4,
                                      cpus_per_job=10, time_min=600, mem_gb=128, account="lab",
                                      qos="high")
    # An array of 5 trainings, as the driver submits them (without submitting it).
    script = _make_sbatch_string(command="python -u -m submitit.core._submit x",
                                 folder=tmp_path / "%j", map_count=5, **launch.slurm_parameters(cfg.launch))
    for line in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=10",
                 "--time=600", "--mem=128GB", "--account=lab", "--qos=high", "--array=0-4%3",
                 "--signal=USR2@120", "--nodes=1"):
        assert f"#SBATCH {line}\n" in script, line


def test_launch_settings_do_not_change_a_run_identity(synth_dir):
    from arkpose import provenance

    cfg = tiny_train_config(synth_dir)
    before = provenance.identity(provenance.run_inputs(cfg))["digest"]
    cfg.launch = LaunchConfig(launcher="slurm", partition="gpu", gpus_per_job=8)
    assert provenance.identity(provenance.run_inputs(cfg))["digest"] == before


@pytest.mark.parametrize("field, value, message", [
    ("launcher", "kubernetes", "is not one of inprocess, pool, local, slurm"),
    ("jobs", 0, "launch.jobs=0 must be positive"),
])
def test_impossible_launch_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        launch.check(LaunchConfig(**{field: value}))


def test_an_unknown_launcher_is_one_line_before_anything_is_written(tmp_path, capsys):
    argv = ["--preset", "smoke", "--launcher", "kubernetes", "--runs", str(tmp_path / "runs")]
    assert command.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "launch.launcher='kubernetes'" in err
    assert not (tmp_path / "runs").exists()
