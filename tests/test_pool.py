"""The pool launcher (arkpose.pool): which jobs share a worker, how many threads a worker
gets, and what a failing worker says. Its full smoke ablation is compared with the
in-process one in test_ablate_run.py."""

import pickle
import signal
from pathlib import Path

import pytest

from arkpose import ablate, ablation_def, pool, presets, runtime
from arkpose.train import TrainingInterrupted

REPO = Path(__file__).resolve().parents[1]


def _table4_jobs(root: Path, seeds=(0, 1)) -> list:
    definition = ablation_def.load_ablation(REPO / "ablations" / "table4.yaml")
    return ablate.plan(definition, presets.preset("laptop"), seeds, root)


def test_a_seeds_rows_that_train_on_the_same_batches_share_a_worker(tmp_path):
    jobs = _table4_jobs(tmp_path)
    groups = [[(jobs[i].row.name, jobs[i].seed) for i in g] for g in pool.group_jobs(jobs)]
    # The tradeoff mask is a target: +tradeoff and +adaptive train on other batches than the
    # baseline and +guidance; +scoring reuses +adaptive. Groups with adaptive rows first.
    assert groups == [
        [("+tradeoff", 0), ("+adaptive", 0), ("+scoring", 0)],
        [("+tradeoff", 1), ("+adaptive", 1), ("+scoring", 1)],
        [("baseline", 0), ("+guidance", 0)],
        [("baseline", 1), ("+guidance", 1)],
    ]


def test_the_last_group_is_split_by_trained_row_when_workers_would_idle(tmp_path):
    jobs = _table4_jobs(tmp_path, seeds=(0, 1, 2))
    groups = [[(jobs[i].row.name, jobs[i].seed) for i in g] for g in pool.group_jobs(jobs, workers=2)]
    assert groups[-3:] == [[("baseline", 1), ("+guidance", 1)], [("baseline", 2)], [("+guidance", 2)]]
    assert sorted(i for g in pool.group_jobs(jobs, workers=2) for i in g) == list(range(len(jobs)))
    # A trained row keeps the row that reuses it.
    paired = [j for j in jobs if j.row.name in ("+tradeoff", "+adaptive", "+scoring")]
    groups = [[(paired[i].row.name, paired[i].seed) for i in g] for g in pool.group_jobs(paired, workers=2)]
    assert groups[-2:] == [[("+tradeoff", 2)], [("+adaptive", 2), ("+scoring", 2)]]
    # No split with as many workers as groups, nor with one worker.
    one_seed = [j for j in jobs if j.seed == 0]
    assert pool.group_jobs(one_seed, workers=2) == pool.group_jobs(one_seed) and len(pool.group_jobs(one_seed)) == 2
    assert len(pool.group_jobs(jobs, workers=1)) == 6


def test_a_reusing_row_without_its_trained_row_is_a_group_of_its_own(tmp_path):
    jobs = [j for j in _table4_jobs(tmp_path, seeds=(0,)) if j.row.name in ("baseline", "+scoring")]
    groups = [[jobs[i].row.name for i in g] for g in pool.group_jobs(jobs)]
    assert sorted(groups) == [["+scoring"], ["baseline"]]


@pytest.mark.parametrize("threads, jobs, each", [("2", 2, 1), ("2", 3, 1), ("4", 2, 2), ("3", 1, 3)])
def test_each_worker_gets_an_even_share_of_the_threads(monkeypatch, threads, jobs, each):
    monkeypatch.setenv(runtime.THREADS_ENV, threads)
    assert pool.worker_threads(jobs) == each


def test_a_stop_signal_crosses_the_process_boundary_with_its_fields():
    stop = pickle.loads(pickle.dumps(TrainingInterrupted(signal.SIGINT, Path("runs/x/last.pt"))))
    assert (stop.signum, stop.path) == (signal.SIGINT, Path("runs/x/last.pt"))
    assert "SIGINT" in str(stop)


def test_a_failing_job_is_named_with_its_error_and_the_way_on(tmp_path):
    jobs = _table4_jobs(tmp_path / "runs", seeds=(0,))
    for job in jobs:
        job.cfg.data.root = str(tmp_path / "no-such-data")
    lines = []
    with pytest.raises(pool.PoolJobFailed, match=r"failed on \+tradeoff seed 0, \+adaptive seed 0, "
                       r"\+scoring seed 0: .*no-such-data.*run the same command again to resume"):
        pool.run_jobs(jobs, tmp_path / "runs", 0, False, 1, lines.append)
    assert lines == ["pool: 5 jobs in 2 groups, 1 worker process(es) of 2 thread(s)"]  # none done
