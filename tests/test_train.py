"""Training loop, checkpoints, resume and the `arkpose train` command line."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import random
import re
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_config import tiny_train_config

from arkpose import checkpoint as ckpt
from arkpose import config, curves, presets, train
from arkpose.cli import main as arkpose_main
from arkpose.train import signals as train_signals
from arkpose.train import step as train_steps

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------
# Checkpoint io (no model or data needed)


def _tiny_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1, 1], gamma=0.1)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    sched.step()
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "epoch": 1, "step": 0, "rng": ckpt.rng_state(),
        "config": config.to_dict(presets.preset("smoke")), "metrics": {"loss": 0.5},
        "version": "0.1.0",
    }
    return model, opt, sched, state


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model, opt, _, state = _tiny_state()
    path = tmp_path / "sub" / "c.pt"
    ckpt.save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)  # plain types only, or this raises
    assert raw["epoch"] == 1 and raw["config"]["name"] == "smoke"
    assert isinstance(raw["scheduler"]["milestones"], dict)  # the Counter became a dict
    for k, v in model.state_dict().items():
        assert torch.equal(raw["model"][k], v)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt, [5], gamma=0.5)
    sched2.load_state_dict(ckpt.scheduler_state_from_plain(raw["scheduler"]))
    assert sched2.get_last_lr() == pytest.approx([1e-5])  # two drops at epoch 1
    assert ckpt.checkpoint_config(raw).name == "smoke"
    assert os.listdir(path.parent) == ["c.pt"]  # no temporary file left


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    plain = torch.load(_saved(state), weights_only=True)
    ckpt.set_rng_state(plain)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def _saved(obj):
    buf = io.BytesIO()
    torch.save(ckpt.to_plain(obj), buf)
    buf.seek(0)
    return buf


def test_unplain_state_is_refused_and_old_file_kept(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"epoch": 1})
    with pytest.raises(TypeError, match=r"checkpoint\['cfg'\] holds a Config"):
        ckpt.save_checkpoint(path, {"epoch": 2, "cfg": config.Config()})
    assert ckpt.load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_missing_and_corrupt_checkpoints_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*arkpose train"):
        ckpt.load_checkpoint(tmp_path / "none.pt")
    _, _, _, state = _tiny_state()
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, state)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated.*delete it"):
        ckpt.load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"cfg": config.Config()}, foreign)  # a pickled class: not weights_only
    with pytest.raises(ckpt.CheckpointError, match="not written by arkpose"):
        ckpt.load_checkpoint(foreign)
    no_model = tmp_path / "no_model.pt"
    ckpt.save_checkpoint(no_model, {k: v for k, v in state.items() if k != "model"})
    with pytest.raises(ckpt.CheckpointError, match=r"lacks \['model'\]"):
        ckpt.load_model(no_model)


def test_lr_schedule_drops_at_the_papers_epochs():
    assert train.lr_milestones(140, (90 / 140, 120 / 140)) == [90, 120]
    assert train.lr_milestones(300, (200 / 300, 260 / 300)) == [200, 260]
    assert train.lr_milestones(10, (90 / 140, 120 / 140)) == [6, 9]
    cfg = presets.preset("coco-w32")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = train.make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.optim.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # epochs 1..90 (1-based) at 1e-3, 91..120 at 1e-4, 121..140 at 1e-5
    assert lrs[89] == pytest.approx(1e-3) and lrs[90] == pytest.approx(1e-4)
    assert lrs[119] == pytest.approx(1e-4) and lrs[120] == pytest.approx(1e-5)
    assert lrs[-1] == pytest.approx(1e-5)


# ---------------------------------------------------------------------------------------
# Command line: parsing, overrides and their errors


def test_cli_overrides_reach_the_config(tmp_path):
    args = train.build_parser().parse_args(
        ["--preset", "quick", "--data", str(tmp_path), "--set", "model.adaptive=false",
         "optim.epochs=3", "--set", "loss.tradeoff=off", "--out", str(tmp_path / "r")]
    )
    cfg, out = train.config_from_args(args)
    assert cfg.name == "quick" and cfg.data.root == str(tmp_path) and out == tmp_path / "r"
    assert cfg.model.adaptive is False and cfg.optim.epochs == 3 and cfg.loss.tradeoff is False
    cfg, out = train.config_from_args(train.build_parser().parse_args(["--preset", "smoke"]))
    assert out == Path("runs/smoke") and cfg.data.root == "data/synthpose-smoke"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "smoke", "--set", "model.adaptiv=false"],
         "unknown config key 'model.adaptiv'.*model.adaptive"),
        (["--preset", "smoke", "--set", "optim.epochs=many"], "optim.epochs: cannot read"),
        (["--preset", "smoke", "--set", "optim.epochs"], "must look like section.field=value"),
        (["--preset", "coco-w32"], "preset coco-w32 trains on COCO.*pass --data DIR"),
        (["--preset", "smoke", "--data", "{tmp}/nowhere"],
         "nowhere does not exist.*arkpose synth --out .*nowhere --preset smoke"),
        (["--preset", "smoke", "--data", "{tmp}", "--resume"], "nothing to resume"),
        (["--out", "{tmp}"], "--preset is required"),
    ],
)
def test_cli_errors_name_the_fix(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_train.json").write_text("{}")
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert arkpose_main(["train", *argv]) == train.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "error:" in err
    assert re.search(message, err, re.DOTALL), err


def test_unknown_preset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--preset", "huge"])
    assert "invalid choice" in capsys.readouterr().err


def test_amp_needs_cuda():
    with pytest.raises(config.ConfigError, match="needs a CUDA device.*optim.amp=none"):
        train_steps._check_amp("bf16", torch.device("cpu"))
    with pytest.raises(config.ConfigError, match="use none, bf16 or fp16"):
        train_steps._check_amp("fp8", torch.device("cpu"))
    train_steps._check_amp("none", torch.device("cpu"))


def test_oom_message_names_the_knobs():
    cfg = presets.preset("coco-w32")
    text = train_steps._oom_message(cfg, train.DistEnv())
    assert "optim.batch_size=6" in text and "data.input_size" in text and "bf16" in text


# ---------------------------------------------------------------------------------------
# End to end on SynthPose (tiny: nano model, 64 px crops, 8 images)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_run(synth_dir, tmp_path_factory):
    """4 epochs without interruption: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    metrics = train.train(tiny_train_config(synth_dir), out, progress=False)
    return out, metrics


def test_smoke_trains_end_to_end_and_loss_falls(synth_dir, tmp_path, capsys):
    out = tmp_path / "smoke"
    argv = [
        "train", "--preset", "smoke", "--data", str(synth_dir), "--out", str(out),
        "--set", "data.input_size=64", "data.train_subset=16", "optim.batch_size=4",
        "optim.epochs=6", "eval.val_images=4", "eval.every=1", "data.min_center_area=64",
        "tensorboard=true",
    ]
    assert arkpose_main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epoch"] == 6
    assert sorted(os.listdir(out)) == [
        "best.pt", "config.yaml", "last.pt", "metrics.jsonl", "tensorboard", "train.log"
    ]
    records = train.read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    # 16 images: single epochs are noisy (with 1 thread epoch 3 once measured above epoch 1);
    # the mean of the last three epochs is below the first.
    assert sum(r["loss"] for r in records[-3:]) / 3 < records[0]["loss"]
    for r in records:
        assert {"loss", "heatmap", "offset", "lr", "images_per_s", "data_wait"} <= set(r)
        assert r["images_per_s"] > 0 and r["effective_batch_size"] == 4
        assert 0.0 <= r["val_AP"] <= 1.0  # validated every epoch here
    # 16 images in batches of 4: one loss-curve point per step, global step numbers, and
    # the points of an epoch average (image-weighted) to its loss.
    curve = curves.read_curves(out)
    assert curve["loss_unit"] == "step" and [s for s, _ in curve["loss"]] == list(range(1, 25))
    for r in records:
        assert r["loss"] == pytest.approx(sum(v for _, v in r["loss_curve"]) / 4, rel=1e-9)
    assert curve["val"] == [[r["epoch"], r["val_AP"]] for r in records]
    # The same numbers in TensorBoard's event files.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == list(range(1, 25))
    assert [e.value for e in events.Scalars("epoch/val_AP")] == pytest.approx([r["val_AP"] for r in records])
    assert config.load_yaml(out / "config.yaml").data.input_size == 64
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 6 and state["step"] == 0 and state["version"] == "0.1.0"
    assert {"model", "optimizer", "scheduler", "rng", "config", "metrics"} <= set(state)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == best["best"]["epoch"] == state["best"]["epoch"]
    log = (out / "train.log").read_text()
    assert "effective 4" in log and "epoch 3:" in log

    model, cfg = ckpt.load_model(out / "last.pt")
    assert cfg.data.input_size == 64 and not model.training
    assert _same_weights(model.state_dict(), state["model"])
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 64))
    assert y["heatmaps"].shape == (1, 17, 16, 16)


def test_resume_gives_the_same_numbers(synth_dir, straight_run, tmp_path):
    ref_dir, ref = straight_run
    cfg = tiny_train_config(synth_dir)
    first = train.train(cfg, tmp_path, progress=False, stop_after=2)
    assert first["epoch"] == 2
    with pytest.raises(config.ConfigError, match="pass --resume"):
        train.train(cfg, tmp_path, progress=False)
    # The command line, config read back from the run's config.yaml.
    assert arkpose_main(["train", "--out", str(tmp_path), "--resume", "--no-progress"]) == 0
    final = train.read_metrics(tmp_path)[-1]
    assert final["epoch"] == 4
    assert final["loss"] == ref["loss"]  # bitwise, not approx
    assert [r["loss"] for r in train.read_metrics(tmp_path)] == [
        r["loss"] for r in train.read_metrics(ref_dir)
    ]
    assert _same_weights(_weights(tmp_path / "last.pt"), _weights(ref_dir / "last.pt"))


def test_sigterm_mid_epoch_saves_and_resumes_exactly(synth_dir, straight_run, tmp_path,
                                                     monkeypatch):
    import arkpose.loss
    from arkpose.train import loop

    ref_dir, ref = straight_run
    cfg = tiny_train_config(synth_dir)
    real = arkpose.loss.compute_losses
    calls = []

    def losses_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # epoch 3, first step (2 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "compute_losses", losses_then_sigterm)
    with pytest.raises(train.TrainingInterrupted, match="SIGTERM.*--resume") as info:
        train.train(cfg, tmp_path, progress=False)
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (2, 1)
    monkeypatch.setattr(loop, "compute_losses", real)
    final = train.train(cfg, tmp_path, progress=False, resume=True)
    assert final["loss"] == ref["loss"]
    assert _same_weights(_weights(tmp_path / "last.pt"), _weights(ref_dir / "last.pt"))


def test_corrupt_last_checkpoint_on_resume(synth_dir, straight_run, tmp_path, capsys):
    ref_dir, _ = straight_run
    data = (ref_dir / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[:1000])
    argv = ["train", "--preset", "smoke", "--data", str(synth_dir), "--out", str(tmp_path),
            "--resume"]
    assert arkpose_main(argv) == train.EXIT_BAD_INPUT
    assert "corrupt or truncated" in capsys.readouterr().err
    with zipfile.ZipFile(ref_dir / "last.pt") as z:  # the real one is a torch zip archive
        assert any(n.endswith("data.pkl") for n in z.namelist())


def test_second_ctrl_c_aborts_at_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background by a shell
    flag = train_signals._StopFlag()
    flag.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signum == signal.SIGINT  # first: remembered, training goes on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGINT) is before


def _nan_losses(*args, **kwargs):
    nan = torch.tensor(float("nan"), requires_grad=True)
    return {"total": nan * 1, "heatmap": nan * 1, "offset": nan * 1}


def _out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _ctrl_c_then_step(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real_train_step(*args, **kwargs)


real_train_step = train.train_step


@pytest.mark.parametrize(
    "step, status, message",
    [
        (_ctrl_c_then_step, train.EXIT_SIGINT, "stopped by SIGINT.*--resume"),
        (_out_of_memory, train.EXIT_ERROR, "out of memory.*optim.batch_size=2.*data.input_size"),
        (_nan_losses, train.EXIT_ERROR, "loss became nan.*lower optim.lr"),
    ],
)
def test_interrupts_and_failures_in_the_loop(synth_dir, tmp_path, monkeypatch, capsys, step,
                                             status, message):
    monkeypatch.setattr(train, "train_step", step)
    argv = ["train", "--preset", "smoke", "--data", str(synth_dir), "--out", str(tmp_path),
            "--no-progress", "--set", "data.input_size=64", "data.train_subset=8",
            "optim.batch_size=4", "eval.every=0"]
    assert arkpose_main(argv) == status
    assert re.search(message, capsys.readouterr().err, re.DOTALL)
    if status == train.EXIT_SIGINT:
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        assert (state["epoch"], state["step"]) == (0, 1)
    else:
        assert not (tmp_path / "last.pt").exists()


def _first_batches(cfg, count=2, epoch=1):
    from arkpose.data import build_train_dataset

    loader = train.TrainLoader(build_train_dataset(cfg, split="train"), cfg, train.DistEnv())
    loader.set_epoch(epoch)
    return list(itertools.islice(iter(loader), count))


def test_rows_of_one_seed_see_identical_batches(synth_dir):
    """Common random numbers: the baseline and the full model of one seed get the same images
    in the same order with the same augmentation; another seed gets other batches."""
    from arkpose import ablate, ablation_def

    definition = ablation_def.load_ablation(REPO / "ablations" / "table4.yaml")
    base = tiny_train_config(synth_dir)
    rows = {r.name: ablate.row_config(base, r) for r in definition.rows}
    first, last = rows["baseline"], rows["+adaptive"]
    assert (first.model.guidance, first.loss.tradeoff, first.model.adaptive) == (False, False, False)
    a, b = _first_batches(first), _first_batches(last)
    for batch_a, batch_b in zip(a, b):
        assert set(batch_a) == set(batch_b)
        for key in batch_a:
            if key == "tradeoff_mask":  # the loss weighting *is* the tradeoff switch
                assert torch.all(batch_a[key] == 1)
                continue
            assert torch.equal(batch_a[key], batch_b[key]), key
    other = dataclasses.replace(first, seed=1)
    assert not torch.equal(_first_batches(other)[0]["image"], a[0]["image"])


def test_rows_of_one_seed_start_from_the_same_weights():
    """Keyed initialisation: a parameter whose name and shape agree across rows starts
    equal; with unit_init='normal' the adaptive row's sampling convs too."""
    from arkpose.model import build_model
    from arkpose.presets import preset

    base = preset("smoke").model

    def weights(seed=0, **switches):
        model = build_model(dataclasses.replace(base, **switches), 17, seed=seed)
        return {k.replace("aconv", "conv"): v for k, v in model.state_dict().items()}

    baseline = weights(guidance=False, adaptive=False)
    guided = weights(guidance=True, adaptive=False)
    shared = [k for k in baseline if baseline[k].shape == guided[k].shape]
    assert len(shared) == len(baseline) - 1  # the regression head's input conv grows by K
    assert all(torch.equal(baseline[k], guided[k]) for k in shared)
    official = weights(guidance=True, adaptive=True)
    normal = weights(guidance=True, adaptive=True, unit_init="normal")
    unit_convs = [k for k in guided if k.endswith(("conv1.weight", "conv2.weight")) and "head" in k]
    assert unit_convs and not any(torch.equal(guided[k], official[k]) for k in unit_convs)
    assert all(torch.equal(guided[k], normal[k]) for k in guided)
    assert official["regression_head.unit.conv1.weight"].abs().max() > 0.01  # uniform ±1/sqrt(9C)
    assert not torch.equal(weights(seed=1, guidance=False, adaptive=False)["backbone.conv1.weight"],
                           baseline["backbone.conv1.weight"])
    with pytest.raises(ValueError, match="unit_init"):
        build_model(dataclasses.replace(base, unit_init="xavier"), 17, seed=0)


def test_rows_with_the_same_data_settings_share_their_batches_bit_for_bit(synth_dir, tmp_path, monkeypatch):
    """launch.batch_cache_gb: a second run whose batches would be the same (another model,
    the same data, seed and target settings) takes the first run's from memory and trains
    to exactly the weights it reaches without the cache; other target settings do not."""
    from arkpose.data.datasets import TrainDataset
    from arkpose.train.loader import BATCH_CACHE

    first = tiny_train_config(synth_dir, epochs=2)
    first.model.guidance = False
    first.launch.batch_cache_gb = 1.0
    second = config.from_dict(config.to_dict(first))
    second.model.guidance = True
    BATCH_CACHE.clear()
    try:
        train.train(first, tmp_path / "first", progress=False)
        assert sorted(BATCH_CACHE.epochs) == [0, 1] and BATCH_CACHE.nbytes > 0
        with monkeypatch.context() as patch:  # served from memory: no sample is rendered
            patch.setattr(TrainDataset, "__getitem__", lambda *a: pytest.fail("augmented again"))
            train.train(second, tmp_path / "cached", progress=False)
        BATCH_CACHE.clear()
        second.launch.batch_cache_gb = 0.0
        train.train(second, tmp_path / "plain", progress=False)
        assert not BATCH_CACHE.epochs  # off: nothing kept
        cached = torch.load(tmp_path / "cached/last.pt", weights_only=True)["model"]
        plain = torch.load(tmp_path / "plain/last.pt", weights_only=True)["model"]
        assert cached.keys() == plain.keys() and all(torch.equal(cached[k], plain[k]) for k in plain)
        # The tradeoff mask is a target: another background weight is another key.
        train.train(first, tmp_path / "again", progress=False)
        shared = BATCH_CACHE.key
        first.loss.tradeoff = not first.loss.tradeoff
        train.train(first, tmp_path / "tradeoff", progress=False)
        assert BATCH_CACHE.key not in (None, shared) and sorted(BATCH_CACHE.epochs) == [0, 1]
        with pytest.raises(config.ConfigError, match="batch_cache_gb"):
            from arkpose import launch
            launch.check(dataclasses.replace(first.launch, batch_cache_gb=-1.0))
    finally:
        BATCH_CACHE.clear()
