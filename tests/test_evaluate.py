"""arkpose.evaluate: golden numbers on the real fixtures, ground truth as predictions,
empty and bad detection lists, the three qualities end to end, the eval/predict commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from arkpose import evaluate as ev
from arkpose.config import Config, DataConfig, DecodeConfig
from arkpose.spec import COCO, CROWDPOSE
from arkpose.targets import make_targets
from tests.test_grouping import annotation, make_person

K = COCO.num_keypoints

GOLDEN_COCO = [0.8609, 0.9931, 0.9109, 0.7756, 0.9373, 0.875, 1.0, 0.9167, 0.78, 0.9429]
GOLDEN_CROWDPOSE = [0.7877, 0.9881, 0.7314, 0.8222, 1.0, 0.7778, 1.0, 0.9802, 0.4116]


def gt_as_predictions(ann_file) -> list[dict]:
    data = json.loads(Path(ann_file).read_text())
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
             "score": 1.0} for a in data["annotations"] if a.get("num_keypoints", 0) > 0]


# ---------------------------------------------------------------------------------------
# Real fixtures


def test_golden_coco_numbers(real_fixtures):
    stats = ev.evaluate(real_fixtures / "coco/test_coco.json",
                        real_fixtures / "coco/example_coco_preds.json", COCO)
    assert list(stats) == list(ev.COCO_STATS)
    assert [round(v, 4) for v in stats.values()] == GOLDEN_COCO


def test_golden_crowdpose_numbers(real_fixtures):
    d = real_fixtures / "crowdpose_eval_only"
    stats = ev.evaluate(d / "example_crowdpose_val.json", d / "example_crowdpose_preds.json",
                        CROWDPOSE)
    assert list(stats) == list(ev.CROWDPOSE_STATS)
    assert [round(v, 4) for v in stats.values()] == GOLDEN_CROWDPOSE


def test_ground_truth_as_predictions_is_perfect(real_fixtures, capsys):
    coco = real_fixtures / "coco/test_coco.json"
    assert list(ev.evaluate(coco, gt_as_predictions(coco), COCO).values()) == pytest.approx([1.0] * 10)
    crowd = real_fixtures / "crowdpose/test_crowdpose.json"
    stats = ev.evaluate(crowd, gt_as_predictions(crowd), CROWDPOSE)
    assert list(stats.values()) == pytest.approx([1, 1, 1, 1, 1, 1, -1, 1, -1])  # no easy/hard
    assert capsys.readouterr().out == ""  # the libraries' printing is captured


def test_oks_sigma_scale_loosens_the_tolerance(real_fixtures):
    coco = real_fixtures / "coco/test_coco.json"
    shifted = gt_as_predictions(coco)
    for det in shifted:  # every labelled joint 4 px off: a typical CPU-scale error
        det["keypoints"] = [v + 4 * (i % 3 == 0) for i, v in enumerate(det["keypoints"])]
    strict = ev.evaluate(coco, shifted, COCO)["AP"]
    loose = ev.evaluate(coco, shifted, DataConfig(dataset="coco", oks_sigma_scale=3.0).spec)["AP"]
    assert strict < loose < 1.0
    gt = gt_as_predictions(coco)
    assert ev.evaluate(coco, gt, DataConfig(dataset="coco", oks_sigma_scale=3.0).spec)["AP"] == 1.0


def test_empty_detections_give_zero_not_a_crash(real_fixtures):
    assert set(ev.evaluate(real_fixtures / "coco/test_coco.json", [], COCO).values()) == {0.0}
    d = real_fixtures / "crowdpose_eval_only/example_crowdpose_val.json"
    assert ev.evaluate(d, [], CROWDPOSE)["AP"] == 0.0


def test_image_subset_evaluates_those_images_only(real_fixtures):
    coco = real_fixtures / "coco/test_coco.json"
    preds = gt_as_predictions(coco)
    first = preds[0]["image_id"]
    mine = [p for p in preds if p["image_id"] == first]
    assert ev.evaluate(coco, mine, COCO, image_ids=[first])["AP"] == pytest.approx(1.0)
    assert ev.evaluate(coco, mine, COCO)["AP"] < 1.0  # the other images' persons are missed


def test_bad_detections_fail_clearly(real_fixtures):
    coco = real_fixtures / "coco/test_coco.json"
    good = gt_as_predictions(coco)[0]
    with pytest.raises(ev.EvaluationError, match="image_id 999"):
        ev.evaluate(coco, [{**good, "image_id": 999}], COCO)
    with pytest.raises(ev.EvaluationError, match="needs 51"):
        ev.evaluate(coco, [{**good, "keypoints": good["keypoints"][:42]}], COCO)
    with pytest.raises(ev.EvaluationError, match="'score'"):
        ev.evaluate(coco, [{k: v for k, v in good.items() if k != "score"}], COCO)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ev.evaluate(coco.parent / "nope.json", [], COCO)


def test_detections_are_not_modified(real_fixtures):
    coco = real_fixtures / "coco/test_coco.json"
    preds = gt_as_predictions(coco)
    before = json.dumps(preds)
    ev.evaluate(coco, preds, COCO)
    assert json.dumps(preds) == before


def test_ground_truth_and_numpy_scalars_are_accepted_and_left_intact(real_fixtures):
    """The evaluator copies each dict it writes into (COCOeval sets 'ignore' on ground-truth
    annotations, loadRes 'id'/'area'/'bbox' on detections); numpy scalars pass the check."""
    gt = json.loads((real_fixtures / "coco/test_coco.json").read_text())
    preds = gt_as_predictions(real_fixtures / "coco/test_coco.json")
    before = json.dumps(gt)
    first = ev.evaluate(gt, preds, COCO)
    assert json.dumps(gt) == before
    as_numpy = [{**p, "keypoints": [np.float64(v) for v in p["keypoints"]]} for p in preds]
    assert ev.evaluate(gt, as_numpy, COCO) == first
    with pytest.raises(ev.EvaluationError, match="finite numbers only"):
        ev.evaluate(gt, [{**preds[0], "keypoints": [np.nan] + preds[0]["keypoints"][1:]}], COCO)


def test_stats_frame_and_table():
    results = {"regression": dict.fromkeys(ev.COCO_STATS, 0.5),
               "final": dict.fromkeys(ev.COCO_STATS, 0.25)}
    frame = ev.stats_frame(results)
    assert list(frame.index) == ["regression", "final"] and list(frame.columns) == list(ev.COCO_STATS)
    assert "0.2500" in ev.format_table(results)


# ---------------------------------------------------------------------------------------
# The three qualities end to end on a tiny on-disk dataset with a perfect model


def _persons(index: int) -> list[np.ndarray]:
    rng = np.random.default_rng(index)
    return [make_person(70, 90, 9, rng), make_person(180, 110, 8, rng)]


def write_dataset(root) -> None:
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(2):
        Image.fromarray(np.full((256, 256, 3), 255 * i, np.uint8)).save(root / f"images/{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 256, "height": 256})
        for p in _persons(i):
            a = annotation(p)
            a.update(id=len(anns) + 1, image_id=i + 1, category_id=1)
            anns.append(a)
    data = {"images": images, "annotations": anns, "categories": [COCO.coco_category()]}
    (root / "ann.json").write_text(json.dumps(data))


class PerfectModel(nn.Module):
    """Test double: the targets of the image's persons (images are told apart by colour;
    256 x 256 images are not resized at test_size 256)."""

    def forward(self, x):
        maps = []
        for image in x:  # a batch of images (arkpose.inference.fuse_batch)
            anns = [annotation(p) for p in _persons(int(image[0, 0, 0] > 0))]
            maps.append(make_targets(anns, 256, 64, COCO))
        return {"heatmaps": torch.stack([t["heatmaps"][:K] for t in maps]),
                "center": torch.stack([t["heatmaps"][K:] for t in maps]),
                "offsets": torch.stack([t["offsets"] for t in maps])}


def tiny_config(root) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.root = "coco", str(root)
    cfg.data.val_ann, cfg.data.val_images = "ann.json", "images"
    cfg.eval.test_size, cfg.eval.decode = 256, DecodeConfig(flip=False)
    return cfg


def test_evaluate_model_three_qualities_perfect(tmp_path):
    write_dataset(tmp_path / "data")
    cfg = tiny_config(tmp_path / "data")
    out = tmp_path / "eval"
    results = ev.evaluate_model(PerfectModel(), cfg, qualities=("regression", "heatmap", "final"),
                                out_dir=out, progress=False)
    for quality in ("regression", "heatmap", "final"):
        assert results[quality]["AP"] == pytest.approx(1.0), quality
        dets = json.loads((out / quality / "detections.json").read_text())
        assert len(dets) == 4
        metrics = json.loads((out / quality / "metrics.json").read_text())
        assert metrics["AP"] == pytest.approx(1.0) and metrics["meta"]["num_images"] == 2
    one = ev.evaluate_model(PerfectModel(), cfg, max_images=1, progress=False)
    assert one["final"]["AP"] == pytest.approx(1.0)  # evaluated on the first image's ground truth only


def test_eval_and_predict_commands(tmp_path, capsys):
    from arkpose.checkpoint import save_checkpoint
    from arkpose.cli import main
    from arkpose.config import to_dict
    from arkpose.model import build_model
    from arkpose.presets import preset

    write_dataset(tmp_path / "data")
    cfg = preset("smoke")
    cfg.data.dataset, cfg.data.root = "coco", str(tmp_path / "data")
    cfg.data.val_ann, cfg.data.val_images = "ann.json", "images"
    cfg.eval.test_size = 64
    torch.manual_seed(0)
    model = build_model(cfg.model, K)
    ckpt = tmp_path / "run/best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0})

    code = main(["eval", "--checkpoint", str(ckpt), "--quality", "regression,final",
                 "--max-images", "1", "--no-progress", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "regression" in text and "final" in text and "AP50" in text
    for q in ("regression", "final"):
        assert (tmp_path / f"run/eval/{q}/metrics.json").is_file()
    combined = json.loads((tmp_path / "run/eval/metrics.json").read_text())
    assert sorted(combined) == ["final", "regression"] and "AP" in combined["final"]

    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "data/images/0.png"),
                 "--out", str(out), "--device", "cpu", "--no-flip"])
    assert code == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert isinstance(preds, list) and all(len(p["keypoints"]) == 3 * K for p in preds)
    assert (out / "000_0.png").is_file()

    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err

    # Bad input to the checkpoint-reading commands: one line each, status 2, nothing evaluated.
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err.startswith("arkpose eval: ")
    assert main(["eval", "--checkpoint", str(ckpt), "--oks-sigma-scale", "0"]) == 2
    assert "data.oks_sigma_scale=0.0 must be > 0" in capsys.readouterr().err
    for command in ("eval", "predict"):
        argv = [command, "--checkpoint", str(ckpt), "--scorer", str(tmp_path / "no_scorer.pt")]
        argv += [str(tmp_path / "data/images/0.png"), "--out", str(out)] if command == "predict" else []
        assert main(argv) == 2
        assert f"arkpose {command}: cannot use scorer" in capsys.readouterr().err


def test_perfect_maps_of_real_images_give_ap_1_for_every_quality(real_fixtures):
    """Real COCO fixture images through the whole pipeline (resize, grouping, back-projection)
    with a model that returns the training targets of the ground truth."""
    from arkpose import inference
    from arkpose.data.coco import KeypointDataset
    from arkpose.data.transforms import resize_info

    ann_file = real_fixtures / "coco/test_coco.json"
    dataset = KeypointDataset(ann_file, real_fixtures / "coco", COCO)

    class GroundTruthModel(nn.Module):
        sample: dict

        def forward(self, x):
            _, _, H, W = x.shape
            s = self.sample
            h, w = s["image"].shape[:2]
            info = resize_info(w, h, 512)
            f = 1.0 / info.factor
            kps = s["keypoints"].astype(np.float64).copy()
            kps[..., :2] = info.to_resized(kps[..., :2])
            boxes = s["bboxes"].astype(np.float64) * f
            boxes[:, :2] = info.to_resized(s["bboxes"][:, :2].astype(np.float64))
            persons = {"keypoints": kps, "bboxes": boxes, "areas": s["areas"] * f * f,
                       "iscrowd": s["iscrowd"], "num_keypoints": s["num_keypoints"]}
            t = make_targets(persons, (H, W), (H // 4, W // 4), COCO)
            return {"heatmaps": t["heatmaps"][None, :K], "center": t["heatmaps"][None, K:],
                    "offsets": t["offsets"][None]}

    model = GroundTruthModel()
    dets = {q: [] for q in ("regression", "heatmap", "final")}
    for i in range(len(dataset)):
        model.sample = sample = dataset[i]
        res = inference.infer_image(model, sample["image"], COCO, DecodeConfig(flip=False),
                                    qualities=tuple(dets), sample=sample)
        for q, found in dets.items():
            found.extend(inference.to_coco(*res[q], sample["image_id"]))
    for q, d in dets.items():
        assert ev.evaluate(ann_file, d, COCO)["AP"] == pytest.approx(1.0), q


def test_learned_scoring_changes_only_the_final_scores(tmp_path):
    """The Table 4 scoring switch: a learned scorer re-scores the final poses; the regression
    and heatmap qualities come out the same, detection for detection."""
    from arkpose import rescore, scoring
    from arkpose.spec import get_spec

    write_dataset(tmp_path / "data")
    cfg = tiny_config(tmp_path / "data")
    qualities = ("regression", "heatmap", "final")
    plain = tmp_path / "plain"
    ev.evaluate_model(PerfectModel(), cfg, qualities=qualities, out_dir=plain, progress=False)
    torch.manual_seed(0)
    spec = get_spec("coco")
    scorer = rescore.save_scorer(tmp_path / "scorer.pt", scoring.ScoringNet(spec.num_features), spec, {})
    score_fn = rescore.load_score_fn(scorer, spec, cfg.eval.scoring_mode)
    scored = tmp_path / "scored"
    ev.evaluate_model(PerfectModel(), cfg, qualities=qualities, out_dir=scored, score_fn=score_fn,
                      progress=False)

    def dets(root, quality):
        return json.loads((root / quality / "detections.json").read_text())

    for quality in ("regression", "heatmap"):
        assert dets(plain, quality) == dets(scored, quality)
    before, after = dets(plain, "final"), dets(scored, "final")
    assert sorted(d["keypoints"] for d in before) == sorted(d["keypoints"] for d in after)
    assert sorted(d["score"] for d in before) != sorted(d["score"] for d in after)
    assert json.loads((scored / "final" / "metrics.json").read_text())["meta"]["learned_scoring"]
