"""The weight average (optim.ema): its arithmetic, and that runs save, resume and evaluate it."""

from __future__ import annotations

import pytest
import torch
from tiny_config import tiny_train_config

from arkpose import checkpoint as ckpt
from arkpose import presets, train
from arkpose.config_check import problems
from arkpose.train.ema import WeightAverage, warmup_decay


def test_the_decay_warms_up_then_holds():
    assert [warmup_decay(0.9, n) for n in (0, 1, 8, 80, 1000)] == pytest.approx(
        [0.1, 2 / 11, 0.5, 0.9, 0.9])


def test_the_average_follows_the_update_rule_and_copies_integer_buffers():
    model = torch.nn.BatchNorm1d(1)
    avg = WeightAverage(model, 0.5)
    with torch.no_grad():
        model.weight.fill_(2.0)  # was 1
        model.num_batches_tracked.fill_(7)
    avg.update(model)  # d = 0.1: 0.1 * 1 + 0.9 * 2
    assert avg.module.weight.item() == pytest.approx(1.9)
    with torch.no_grad():
        model.weight.fill_(0.0)
    avg.update(model)  # d = 2/11
    assert avg.module.weight.item() == pytest.approx(1.9 * 2 / 11)
    assert avg.module.num_batches_tracked.item() == 7 and avg.updates == 2
    assert not any(p.requires_grad for p in avg.module.parameters())


def test_out_of_range_decays_are_config_errors():
    cfg = presets.preset("smoke")
    cfg.optim.ema = 1.0
    assert problems(cfg) == ["optim.ema=1.0 must be in [0, 1) (0 = off)"]


def _states(path):
    state = torch.load(path, weights_only=True)
    return state["model"], state["online_model"], state["ema_updates"]


def test_a_run_saves_the_average_and_resumes_it_exactly(synth_dir, tmp_path):
    cfg = tiny_train_config(synth_dir)
    cfg.optim.ema = 0.9
    straight, split = tmp_path / "straight", tmp_path / "split"
    train.train(cfg, straight, progress=False)
    train.train(cfg, split, progress=False, stop_after=2)
    train.train(cfg, split, progress=False, resume=True)
    avg, online, updates = _states(straight / "last.pt")
    assert updates == 8  # 4 epochs of 2 steps
    assert any(not torch.equal(avg[k], online[k]) for k in avg if avg[k].is_floating_point())
    for a, b in zip(_states(straight / "last.pt")[:2], _states(split / "last.pt")[:2]):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # What evaluation loads is the average.
    model, _ = ckpt.load_model(straight / "last.pt")
    assert all(torch.equal(v, avg[k]) for k, v in model.state_dict().items())
