"""Ablation runs: train every row of an ablation definition for every seed, evaluate,
analyse, and say how sure each difference is.

An ablation definition (``ablations/table4.yaml``) lists rows; each row is a set of config
overrides applied on top of a preset, or reuses another row's checkpoint (with learned pose
scoring in Table 4). :func:`run_ablation` runs every (row, seed) pair, seeds in the outer
loop, and is resumable at every step.

Layout: ``<runs>/<ablation>-<preset>/<row>/seed-<s>/`` holds the training run and its
``identity.json`` (:mod:`arkpose.provenance`), ``eval/`` (``identity.json``, ``<quality>/``
``{detections.json, matching.npz, metrics.json}``), ``analysis/<quality>/analysis.json`` and,
where learned scoring is on, ``scorer/scorer.pt``. Each folder is reused only when its
identity matches what this run would make; a folder whose identity differs is moved to
``superseded/`` with one line saying what changed. The run root collects ``per_seed.csv``,
``rows.csv``, ``deltas.csv`` (paired bootstrap, :mod:`arkpose.stats`), ``summary.json`` and
``provenance.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arkpose
from arkpose import analysis, presets, provenance
from arkpose import config as config_lib
from arkpose.ablation_def import (
    Ablation,
    AblationError,
    Row,
    row_config,
)
from arkpose.config import QUALITIES
from arkpose.data import synth
from arkpose.jsonio import write_json
from arkpose.provenance import IDENTITY_FILE, identity, read_identity


def ensure_data(cfg: config_lib.Config, *, progress: bool = True) -> Path:
    """The dataset root of ``cfg``. SynthPose data is generated when missing and checked
    against its preset when present (a dataset of an older preset version is refused, so
    a stale copy is never trained on silently)."""
    root = Path(cfg.data.root)
    if not cfg.data.synth_preset:
        if (root / cfg.data.val_ann).is_file() and (root / cfg.data.train_ann).is_file():
            return root
        raise FileNotFoundError(
            f"no dataset at {root} (expected {cfg.data.train_ann} and {cfg.data.val_ann}); "
            "point --data at your COCO/CrowdPose copy"
        )
    try:
        return Path(synth.generate(root, preset=cfg.data.synth_preset, seed=0, progress=progress))
    except synth.SynthError as err:
        raise synth.SynthError(
            f"{err}. To regenerate it for this preset: arkpose synth --out {root} "
            f"--preset {cfg.data.synth_preset} --force"
        ) from None


@dataclass(frozen=True)
class Job:
    """One (row, seed): its config, its folder, and the trained run it evaluates."""

    row: Row
    seed: int
    cfg: config_lib.Config
    folder: Path
    train_folder: Path  # == folder for trained rows; the reused row's folder otherwise

    @property
    def trains(self) -> bool:
        return self.row.reuse is None

    @property
    def label(self) -> str:
        return f"{self.row.name} seed {self.seed}"


# The shared backbone run (Config.pretrain_epochs): its folder under the run root, and its
# seed, outside the rows' default seeds 0..N-1 so that it shares no random stream with them.
PRETRAIN_DIR = "pretrain"
PRETRAIN_SEED = 1000


def pretrain_job(ablation: Ablation, base: config_lib.Config, root: Path,
                 extra: list[str] | None = None) -> Job | None:
    """The run whose backbone every row and seed starts from, when ``base.pretrain_epochs`` >
    0: the first row's settings (Table 4's baseline) for that many epochs, seed
    :data:`PRETRAIN_SEED`, no validation (docs/ablations.md, "Shared backbone")."""
    if base.pretrain_epochs <= 0:
        return None
    first = ablation.rows[0]
    cfg = row_config(base, first, extra)
    cfg.seed = PRETRAIN_SEED
    cfg.optim.epochs = base.pretrain_epochs
    cfg.eval.every = 0
    cfg.model.init_backbone = ""
    row = Row(PRETRAIN_DIR, first.overrides, paper_method=first.paper_method)
    return Job(row, PRETRAIN_SEED, cfg, root / PRETRAIN_DIR, root / PRETRAIN_DIR)


def pretrain_info(root: Path) -> dict | None:
    """What a summary records of the shared backbone run: its digest, epochs and seconds."""
    folder = Path(root) / PRETRAIN_DIR
    ident, done = read_identity(folder), folder / DONE_FILE
    if ident is None or not done.is_file():
        return None
    return {"digest": ident["digest"], "seed": ident["inputs"]["config"]["seed"],
            "epochs": ident["inputs"]["config"]["optim.epochs"],
            "train_s": round(float(_read_json(done)["train_s"]), 1)}


def plan(ablation: Ablation, base: config_lib.Config, seeds: tuple[int, ...], root: Path,
         extra: list[str] | None = None, init_backbone: Path | None = None) -> list[Job]:
    """Every (row, seed) job, seeds outer, trained rows before the rows that reuse them;
    ``init_backbone``: the shared backbone's checkpoint every training starts from."""
    by_name = {r.name: r for r in ablation.rows}
    ordered = [r for r in ablation.rows if r.reuse is None] + [r for r in ablation.rows if r.reuse]
    jobs = []
    for seed in seeds:
        for row in ordered:
            cfg = row_config(base, row, extra)
            cfg.seed = seed
            if init_backbone is not None:
                cfg.model.init_backbone = str(init_backbone)
            folder = root / row.slug / f"seed-{seed}"
            source = by_name[row.reuse] if row.reuse else row
            jobs.append(Job(row, seed, cfg, folder, root / source.slug / f"seed-{seed}"))
    return jobs


def check_runs_folder(jobs: list[Job], root: Path) -> None:
    """Refuse, before anything is written, a runs folder this arkpose cannot vouch for."""
    fix = "move it away (or pass another --runs) and run again"
    for row_dir in {j.folder.parent for j in jobs}:
        legacy = [n for n in ("done.json", "last.pt", "eval", "ablation_row.yaml") if (row_dir / n).exists()]
        if legacy:
            raise AblationError(f"{row_dir} was written by an older arkpose (a run without "
                                f"seed folders or digests: {', '.join(legacy)}); {fix}")
    for job in jobs:
        if job.folder.is_dir() and any(job.folder.iterdir()) and read_identity(job.folder) is None:
            raise AblationError(f"{job.folder} holds files but no readable {IDENTITY_FILE} (written "
                                f"by an older arkpose, or not by arkpose); {fix}")


def _claim(folder: Path, ident: dict, root: Path, label: str, log: Callable[[str], None]) -> bool:
    """Make ``folder`` the home of the run ``ident``: True when what is there is that run."""
    old = read_identity(folder)
    if old is not None and old["digest"] == ident["digest"]:
        return True
    if old is not None:
        rel = folder.relative_to(root)
        dest = root / "superseded" / f"{'__'.join(rel.parts)}-{old['digest'][:10]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        folder.rename(dest)
        log(f"{label}: {provenance.describe_change(old, ident)}; not reusing {rel} "
            f"(moved to {dest.relative_to(root)})")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / IDENTITY_FILE, ident, indent=1, default=str)
    return False


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    write_json(path, data, indent=2, default=float)


DONE_FILE = "done.json"  # written when a row's training has finished


def train_row(cfg: config_lib.Config, out: Path, *, progress: bool = True) -> Path:
    """Train one row (resuming an interrupted run); returns the final checkpoint path."""
    from arkpose import runtime, train  # lazy: torch (~1.3 s); planning and reading runs need none

    done = out / DONE_FILE
    if not done.is_file():
        metrics = train.train(cfg, out, resume=(out / "last.pt").is_file(), progress=progress)
        seconds = sum(r.get("seconds", 0.0) for r in train.read_metrics(out))
        _write_json(done, {"metrics": metrics, "train_s": seconds, **provenance.git_state(),
                           "device": provenance.device_name(cfg.device),
                           "threads": runtime.num_threads()})
    return out / "last.pt"


def eval_inputs(job: Job, train_digest: str, qualities: tuple[str, ...], max_images: int,
                scorer_sha: str | None) -> dict[str, Any]:
    """Everything an evaluation's numbers depend on (the checkpoint by its run digest); the
    decoding whole, so a new decoding setting is part of the identity without a change here."""
    e = job.cfg.eval
    return {"kind": "eval", "arkpose": arkpose.__version__, "train": train_digest,
            "qualities": list(qualities), "split": "val", "max_images": max_images,
            "test_size": e.test_size, "decode": config_lib.to_dict(job.cfg)["eval"]["decode"],
            "scoring_mode": e.scoring_mode if scorer_sha else None, "scorer": scorer_sha,
            "oks_sigma_scale": job.cfg.data.oks_sigma_scale, "data": job.cfg.data.root,
            # a reusing row rescores the trained row's final detections (evaluate_row)
            **({"final_poses": "rescored"} if scorer_sha and not job.trains else {})}


def evaluate_row(job: Job, checkpoint: Path, out: Path, qualities: tuple[str, ...], *,
                 scorer: Path | None, max_images: int, progress: bool) -> dict[str, dict]:
    """Evaluate ``checkpoint`` with the job's settings for each quality not yet on disk. A
    row that reuses another's training and only adds learned scoring rescores that row's
    final detections instead of running the model again (:func:`_rescore_reused`)."""
    todo = [q for q in qualities if not (out / q / "metrics.json").is_file()]
    if todo:
        # lazy: torch (~1.3 s), pandas and the COCO tools (~0.5 s)
        from arkpose import checkpoint as ckpt
        from arkpose import evaluate, rescore

        t0 = time.perf_counter()
        score_fn = None
        if scorer is not None:
            score_fn = rescore.load_score_fn(scorer, job.cfg.data.spec, job.cfg.eval.scoring_mode)
        if not job.trains and score_fn is not None and todo == ["final"]:
            _rescore_reused(job, out, score_fn)
        else:  # the strata matchings come from the evaluation's own COCOeval (one OKS pass)
            model, _ = ckpt.load_model(checkpoint)
            evaluate.evaluate_model(model, job.cfg, split="val", qualities=tuple(todo),
                                    max_images=max_images, out_dir=out, score_fn=score_fn,
                                    progress=progress, strata=True)
        timing = _read_json(out / "timing.json") if (out / "timing.json").is_file() else {}
        _write_json(out / "timing.json", {"eval_s": timing.get("eval_s", 0.0) + time.perf_counter() - t0,
                                          **provenance.git_state()})
    return {q: _read_json(out / q / "metrics.json") for q in qualities}


def _rescore_reused(job: Job, out: Path, score_fn: Callable) -> None:
    """The final quality of a reusing row: the trained row's final detections with the
    learned scores (:func:`arkpose.rescore.rescore_detections`), evaluated on its images."""
    from arkpose import evaluate, rescore  # lazy: torch, pandas and the COCO tools
    from arkpose.data import split_paths  # lazy: the datasets import torch

    source = job.train_folder / "eval" / "final"
    meta = _read_json(source / "metrics.json")["meta"]
    dets = rescore.rescore_detections(_read_json(source / "detections.json"), score_fn,
                                      job.cfg.data.spec)
    ids = [int(i) for i in evaluate.Matching.load(source / evaluate.MATCHING_FILE).image_ids]
    kept = {k: v for k, v in meta.items() if k not in ("quality", "num_images", "num_detections")}
    evaluate.evaluate_detections(split_paths(job.cfg, "val")[0], {"final": dets}, job.cfg.data.spec,
                                 image_ids=ids, out_dir=out, strata=True,
                                 extra={**kept, "learned_scoring": True,
                                        "rescored": str(source / "detections.json")})


def analysis_compat(cfg: config_lib.Config) -> str:
    """coco-analyze's own numbers on real data (COCO, CrowdPose); its quirk-free mode on
    SynthPose.

    The original tool's area range 'all' starts at 32² px: on SynthPose at 128 px that
    would leave out four persons in five, so synthetic data uses ``compat="fixed"``.
    """
    return "fixed" if cfg.data.dataset == "synth" else "coco-analyze"


def analyse_row(cfg: config_lib.Config, eval_dir: Path, out: Path, qualities: tuple[str, ...]) -> None:
    """Ronchi-Perona analysis of each quality's detections (numbers only; plots in notebooks)."""
    gt = Path(cfg.data.root) / cfg.data.val_ann
    for quality in qualities:
        target = out / quality / "analysis.json"
        if target.is_file():
            continue
        result = analysis.analyze(
            str(gt), str(eval_dir / quality / "detections.json"), spec=cfg.data.spec,
            compat=analysis_compat(cfg), name=f"{cfg.name} ({quality})",
        )
        _write_json(target, result.to_dict())  # NaN already written as null


SCORER_DIR = "scorer"


def ensure_scorer(job: Job, train_digest: str, root: Path, log: Callable[[str], None],
                  progress: bool) -> Path:
    """The learned scorer of the job's trained run (trained from its checkpoint when absent)."""
    from arkpose import rescore  # lazy: torch (~1.3 s)

    folder = job.train_folder / SCORER_DIR
    images = job.cfg.eval.scorer_images
    ident = identity({"kind": "scorer", "arkpose": arkpose.__version__,
                      "train": train_digest, "seed": job.seed, "images": images})
    target = folder / rescore.SCORER_FILE
    if not (_claim(folder, ident, root, f"{job.label} scorer", log) and target.is_file()):
        t0 = time.perf_counter()
        rescore.rescore(job.train_folder / "last.pt", out=target, seed=job.seed,
                        max_images=images, progress=progress)
        _write_json(folder / "timing.json", {"scorer_s": time.perf_counter() - t0})
    return target


def claim_training(job: Job, root: Path, log: Callable[[str], None], quiet_reuse: bool = False) -> str:
    """Make ``job.folder`` the home of the job's training (:func:`_claim`) and say whether it
    trains anew, resumes or is reused; returns the run's digest."""
    ident = identity(provenance.run_inputs(job.cfg))
    if not _claim(job.folder, ident, root, job.label, log):
        log(f"{job.label}: training into {job.folder}")
    elif (job.folder / DONE_FILE).is_file():
        if not quiet_reuse:
            log(f"{job.label}: reusing {job.folder} (same digest {ident['digest'][:10]})")
    else:
        log(f"{job.label}: resuming {job.folder}")
    return ident["digest"]


def run_job(job: Job, root: Path, train_digests: dict[Path, str], max_images: int,
            analyse: bool, log: Callable[[str], None], progress: bool
            ) -> tuple[dict, Path, dict[str, Path], Path | None]:
    """Train (or reuse), score, evaluate and analyse one (row, seed); ``train_digests``
    collects the digest of every trained folder for the rows that reuse it.
    -> ({quality: stats}, the evaluation folder, {quality: the folder its numbers come from},
    the scorer used or None)"""
    if job.trains:
        train_digests[job.folder] = claim_training(job, root, log)
        train_row(job.cfg, job.folder, progress=progress)
    else:
        reused = identity({"kind": "reuse", "train": train_digests[job.train_folder]})
        _claim(job.folder, reused, root, job.label, log)
    train_digest = train_digests[job.train_folder]
    scorer = ensure_scorer(job, train_digest, root, log, progress) if job.cfg.eval.learned_scoring else None
    # Learned scoring only reorders the final poses: a reusing row evaluates the final
    # quality alone and takes the regression and heatmap qualities of the row it reuses.
    qualities = QUALITIES if job.trains else ("final",)
    inputs = eval_inputs(job, train_digest, qualities, max_images,
                         provenance.file_sha256(scorer) if scorer else None)
    eval_dir = job.folder / "eval"
    _claim(eval_dir, identity(inputs), root, f"{job.label} evaluation", log)
    metrics = evaluate_row(job, job.train_folder / "last.pt", eval_dir, qualities,
                           scorer=scorer, max_images=max_images, progress=progress)
    sources = {q: (eval_dir if q in qualities else job.train_folder / "eval") / q for q in QUALITIES}
    for quality in QUALITIES:
        if quality not in metrics:
            metrics[quality] = _read_json(sources[quality] / "metrics.json")
    if analyse:
        analysis_dir = job.folder / "analysis"
        ident = identity({"kind": "analysis", "eval": read_identity(eval_dir)["digest"],
                          "compat": analysis_compat(job.cfg)})
        _claim(analysis_dir, ident, root, f"{job.label} analysis", log)
        analyse_row(job.cfg, eval_dir, analysis_dir, qualities)
    return metrics, eval_dir, sources, scorer


def run_ablation(
    ablation: Ablation,
    preset: str,
    *,
    seeds: tuple[int, ...] | None = None,
    runs_dir: str | Path = "runs/ablations",
    overrides: list[str] | None = None,
    data_root: str | None = None,
    max_val_images: int = 0,
    analyse: bool = True,
    n_boot: int = 1000,
    threads: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every (row, seed), then the paired statistics; returns (and writes) the summary.

    Bad input (a ``seed`` override, a runs folder of an older arkpose) raises
    :class:`AblationError` before anything in the runs folder is written.
    """
    from arkpose import ablation_report  # lazy: it imports this module

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    extra = list(overrides or [])
    if any(o.partition("=")[0].strip() == "seed" for o in extra):
        raise AblationError("--set seed=... is not an ablation override: every row runs every "
                            "seed of --seeds; use --seeds 1, (one seed) or --seeds 0,1,2")
    base = presets.preset(preset)
    if data_root is not None:
        base.data.root = data_root
        base.data.synth_preset = ""
    config_lib.apply_overrides(base, extra)
    from arkpose import launch  # lazy: it imports this module

    launch.check(base.launch)
    seeds = tuple(range(base.ablation_seeds)) if seeds is None else tuple(seeds)
    root = Path(runs_dir) / f"{ablation.name}-{preset}"
    pre = pretrain_job(ablation, base, root, extra)
    jobs = plan(ablation, base, seeds, root, extra, pre and pre.folder / "last.pt")
    check_runs_folder(jobs + [pre] if pre else jobs, root)
    ensure_data(base, progress=progress)
    data_digest = provenance.dataset_digest(base)
    if base.launch.submitted:
        # The rows' identities hold the shared backbone's weights: it must exist first.
        for batch in ([pre] if pre else []), jobs:
            unfinished = launch.train_all(batch, root, base.launch, log, claim_training)
            if unfinished:
                raise launch.JobsPending(unfinished, root)

    t_start = time.perf_counter()
    if pre is not None:
        claim_training(pre, root, log)
        train_row(pre.cfg, pre.folder, progress=progress)
    if base.launch.launcher == "pool":
        from arkpose import pool  # lazy: it imports this module

        outcomes = pool.run_jobs(jobs, root, max_val_images, analyse, base.launch.jobs, log)
    else:
        train_digests: dict[Path, str] = {}
        outcomes = [run_job(job, root, train_digests, max_val_images, analyse, log, progress)
                    for job in jobs]
    records, eval_dirs = [], {}
    for job, (metrics, eval_dir, sources, scorer) in zip(jobs, outcomes):
        eval_dirs.update({(job.row.name, job.seed, q): folder for q, folder in sources.items()})
        records.append(ablation_report.run_record(job, metrics, eval_dir, scorer))
    if base.launch.launcher == "inprocess" and base.launch.batch_cache_gb > 0:
        from arkpose.train.loader import BATCH_CACHE  # lazy: torch (~1.3 s)

        BATCH_CACHE.clear()  # the last seed's batches: gigabytes the summaries do not need
    return ablation_report.write_summary(
        ablation, preset, base, seeds, jobs, records, eval_dirs, root, data_digest=data_digest,
        max_val_images=max_val_images, n_boot=n_boot, threads=threads, wall_s=time.perf_counter() - t_start)
