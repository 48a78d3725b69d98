"""The shared backbone: model.init_backbone, its digest, and the ablation's pretrain run."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_config import tiny_train_config

from arkpose import ablate, ablation_def, ablation_report, config, presets, provenance
from arkpose import checkpoint as ckpt
from arkpose.model import build_model
from arkpose.train.pretrained import BackboneMismatch, backbone_sha256, load_backbone


def _save_model(path, model_cfg, seed):
    model = build_model(model_cfg, 17, seed=seed)
    cfg = presets.preset("smoke")
    cfg.model = model_cfg
    ckpt.save_checkpoint(path, {"model": model.state_dict(), "config": config.to_dict(cfg)})
    return model


def test_the_backbone_is_copied_and_the_heads_are_not(tmp_path):
    model_cfg = presets.preset("smoke").model
    source = _save_model(tmp_path / "a.pt", model_cfg, seed=1)
    model = build_model(model_cfg, 17, seed=2)
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    load_backbone(model, tmp_path / "a.pt")
    theirs = source.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, theirs[k]), k
        else:
            assert torch.equal(v, heads_before[k]), k
    assert any(not torch.equal(heads_before[k], theirs[k]) for k in heads_before)


def test_a_backbone_of_another_shape_is_refused_with_the_fix(tmp_path):
    _save_model(tmp_path / "tiny.pt", config.ModelConfig(backbone="tiny-w16"), seed=0)
    model = build_model(presets.preset("smoke").model, 17, seed=0)
    with pytest.raises(BackboneMismatch, match="does not fit.*pretrain with the same model.backbone"):
        load_backbone(model, tmp_path / "tiny.pt")


def test_the_digest_holds_the_backbone_weights_not_the_path_nor_the_file(synth_dir, tmp_path):
    _save_model(tmp_path / "a.pt", presets.preset("smoke").model, seed=1)
    shutil.copy(tmp_path / "a.pt", tmp_path / "b.pt")
    _save_model(tmp_path / "c.pt", presets.preset("smoke").model, seed=2)
    # The same backbone in another file: other heads, an optimizer state, another epoch.
    state = ckpt.load_checkpoint(tmp_path / "a.pt")
    state["model"] = {k: v if k.startswith("backbone.") else v + 1 for k, v in state["model"].items()}
    ckpt.save_checkpoint(tmp_path / "d.pt", {**state, "epoch": 7, "optimizer": {"lr": 0.5}})
    # One backbone tensor moved by one ulp; then its bytes kept under another shape.
    first = next(k for k in state["model"] if k.startswith("backbone.") and state["model"][k].dim() == 4)
    original = state["model"][first]
    state["model"][first] = torch.nextafter(original, torch.tensor(float("inf")))
    ckpt.save_checkpoint(tmp_path / "e.pt", state)
    state["model"][first] = original.reshape(original.shape[::-1])
    ckpt.save_checkpoint(tmp_path / "f.pt", state)
    assert backbone_sha256(tmp_path / "f.pt") != backbone_sha256(tmp_path / "a.pt")
    digests = []
    for name in ("a.pt", "b.pt", "c.pt", "d.pt", "e.pt"):
        cfg = presets.preset("smoke")
        cfg.data.root = str(synth_dir)
        cfg.model.init_backbone = str(tmp_path / name)
        digests.append(provenance.digest(provenance.run_inputs(cfg)))
    assert digests[0] == digests[1] == digests[3]
    assert len({digests[0], digests[2], digests[4]}) == 3


def test_an_ablation_trains_the_shared_backbone_first_and_every_row_starts_from_it(
        synth_dir, tmp_path, monkeypatch):
    definition = tmp_path / "d.yaml"
    definition.write_text("name: d\nrows:\n  - {name: plain, set: {model.guidance: false}}\n"
                          "  - {name: guided, set: {model.guidance: true}}\n")
    tiny = tiny_train_config(synth_dir, epochs=1)
    overrides = [f"data.root={synth_dir}", "data.synth_preset=", "data.input_size=64",
                 "data.train_subset=8", "optim.batch_size=4", "optim.epochs=1", "eval.every=0",
                 f"data.min_center_area={tiny.data.min_center_area}", "pretrain_epochs=2"]
    trained = []
    real_train_row = ablate.train_row

    def record_train_row(cfg, out, progress):
        trained.append((out.name if out.name == "pretrain" else out.parent.name, cfg.seed,
                        cfg.optim.epochs, cfg.model.guidance, cfg.model.init_backbone))
        return real_train_row(cfg, out, progress=progress)

    monkeypatch.setattr(ablate, "train_row", record_train_row)
    monkeypatch.setattr(ablate, "evaluate_row", lambda *a, **k: {q: {"AP": 0.0} for q in config.QUALITIES})
    monkeypatch.setattr(ablation_report, "write_summary", lambda *args, **kwargs: None)
    monkeypatch.setattr(ablation_report, "run_record", lambda *args: {})
    run = lambda: ablate.run_ablation(
        ablation_def.load_ablation(definition), "smoke", seeds=(0, 1), analyse=False, overrides=overrides,
        runs_dir=tmp_path / "runs", progress=False, log=lambda line: None)
    run()
    root = tmp_path / "runs/d-smoke"
    backbone = str(root / "pretrain/last.pt")
    # The first row's settings, its own seed, pretrain_epochs epochs; then every row and seed.
    assert trained == [("pretrain", ablate.PRETRAIN_SEED, 2, False, ""),
                       ("plain", 0, 1, False, backbone), ("guided", 0, 1, True, backbone),
                       ("plain", 1, 1, False, backbone), ("guided", 1, 1, True, backbone)]
    sha = "backbone-sha256:" + backbone_sha256(backbone)
    for folder in ("plain/seed-0", "guided/seed-1"):
        ident = provenance.read_identity(root / folder)
        assert ident["inputs"]["config"]["model.init_backbone"] == sha
    info = ablate.pretrain_info(root)
    assert (info["epochs"], info["seed"]) == (2, ablate.PRETRAIN_SEED) and info["train_s"] > 0
    trained.clear()
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("last.pt")}
    run()  # everything is reused
    assert {p: p.stat().st_mtime_ns for p in root.rglob("last.pt")} == stamps
    assert trained == [("pretrain", ablate.PRETRAIN_SEED, 2, False, "")] + [
        (r, s, 1, r == "guided", backbone) for s in (0, 1) for r in ("plain", "guided")]
    assert all((root / f / "done.json").is_file() for f in ("pretrain", "plain/seed-0"))
