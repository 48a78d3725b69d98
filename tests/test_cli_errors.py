"""Every bad input a new user hit (issue 14) ends in one line on stderr naming the input, the
problem and the fix, exit status 2, no traceback and nothing half-written.

Each row runs the real ``arkpose`` command as a subprocess; the rows run side by side (one
torch import each) in a module fixture, and each test reads its row's result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arkpose

# row id -> (argv with {tmp} for the scratch folder, texts stderr must contain)
ROWS = {
    "analyze-truncated-gt": (
        "analyze --gt {tmp}/cut.json --dt {tmp}/dt.json --out {tmp}/an1 --no-plots",
        ["cut.json", "not valid json", "ends in the middle"]),
    "analyze-empty-dt": (
        "analyze --gt {tmp}/gt.json --dt {tmp}/empty.json --out {tmp}/an2 --no-plots",
        ["empty.json", "is empty (0 bytes)"]),
    "analyze-foreign-image-ids": (
        "analyze --gt {tmp}/gt.json --dt {tmp}/foreign.json --out {tmp}/an3 --no-plots",
        ["foreign.json", "none of the image ids", "[900]", "[7]"]),
    "train-negative-lr": (
        "train --preset smoke --data {tmp}/data --out {tmp}/r-lr --set optim.lr=-1",
        ["optim.lr=-1.0 must be > 0", "--set"]),
    "train-out-of-range": (
        ("train --preset smoke --data {tmp}/data --out {tmp}/r-range --set optim.epochs=-1 "
         "optim.batch_size=0 data.sigma=0"),
        ["optim.epochs=-1 must be >= 1", "optim.batch_size=0 must be >= 1",
         "data.sigma=0.0 must be > 0"]),
    "synth-knob-type": (
        "synth --out {tmp}/s --preset smoke --set max_persons=abc",
        ["max_persons", "takes an int", "'abc'"]),
    "train-resume-changed-model": (
        ("train --preset smoke --data {tmp}/data --out {tmp}/run --resume "
         "--set model.adaptive=false model.heatmap_channels=4"),
        ["cannot resume", "last.pt", "model.adaptive True -> False",
         "model.heatmap_channels 8 -> 4"]),
    "random-bytes-checkpoint": (
        "eval --checkpoint {tmp}/random.pt --device cpu",
        ["random.pt is not a checkpoint", "arkpose train"]),
    "predict-folder-as-image": (
        "predict --checkpoint {tmp}/run/last.pt {tmp}/data --out {tmp}/p-folder --device cpu",
        ["data is a folder", "image files inside it"]),
    "predict-corrupt-among-good": (
        ("predict --checkpoint {tmp}/run/last.pt {tmp}/tiny.png {tmp}/corrupt.jpg {tmp}/tiny.png "
         "--out {tmp}/p-corrupt --device cpu --no-flip"),
        ["corrupt.jpg", "skipped"]),
    "unknown-set-key": (
        "train --preset smoke --data {tmp}/data --out {tmp}/r-key --set optim.lerning_rate=3",
        ["unknown config key 'optim.lerning_rate'", "did you mean", "optim.lr"]),
    "ablate-set-takes-several": (
        ("ablate --preset smoke --data {tmp}/data --runs {tmp}/ab --no-notebooks "
         "--set optim.epochs=1 optim.lr=-1"),
        ["optim.lr=-1.0 must be > 0"]),
    "eval-set-data-layout": (
        ("eval --checkpoint {tmp}/run/last.pt --data {tmp}/data --set data.dataset=crowdpose "
         "--device cpu"),
        ["data.dataset='crowdpose' has 14 keypoints", "predicts 17"]),
    "rescore-cuda-without-cuda": (
        "rescore --checkpoint {tmp}/run/last.pt --out {tmp}/sc/scorer.pt --device cuda",
        ["--device cuda", "CUDA is not available"]),
    "eval-set-model-key": (
        "eval --checkpoint {tmp}/run/last.pt --set model.adaptive=false --device cpu",
        ["model.adaptive", "only data.* keys"]),
}
# Commands that must leave no folder behind when they refuse.
NOT_CREATED = {"train-negative-lr": "r-lr", "train-out-of-range": "r-range",
               "synth-knob-type": "s", "unknown-set-key": "r-key", "ablate-set-takes-several": "ab",
               "analyze-empty-dt": "an2",
               "rescore-cuda-without-cuda": "sc"}


def _write_inputs(tmp: Path) -> None:
    """A 4-image SynthPose folder, an untrained checkpoint (last.pt) and the damaged files."""
    import torch
    from PIL import Image
    from tiny_config import tiny_train_config

    from arkpose.checkpoint import save_checkpoint
    from arkpose.config import to_dict
    from arkpose.data.synth import generate
    from arkpose.model import build_model

    generate(tmp / "data", "smoke", seed=0, train=4, val=2, progress=False, card=False)
    cfg = tiny_train_config(tmp / "data")
    torch.manual_seed(0)
    model = build_model(cfg.model, 17)
    save_checkpoint(tmp / "run" / "last.pt",
                    {"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0})
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "tiny.png")
    (tmp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 20)
    kps = [10.0, 10.0, 2] * 17
    gt = {"images": [{"id": 7, "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "keypoints": kps,
                           "bbox": [5, 5, 20, 20], "area": 400.0, "iscrowd": 0,
                           "num_keypoints": 17}],
          "categories": [{"id": 1, "name": "person"}]}
    text = json.dumps(gt)
    (tmp / "gt.json").write_text(text)
    (tmp / "cut.json").write_text(text[: len(text) // 2])
    (tmp / "empty.json").write_bytes(b"")
    (tmp / "dt.json").write_text(json.dumps([{"image_id": 7, "category_id": 1,
                                              "keypoints": kps, "score": 0.9}]))
    (tmp / "foreign.json").write_text(json.dumps([{"image_id": 900, "category_id": 1,
                                                   "keypoints": kps, "score": 0.9}]))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    tmp = tmp_path_factory.mktemp("cli_errors")
    _write_inputs(tmp)
    # No visible GPU, so that the --device cuda row means the same on a GPU machine.
    env = {**os.environ, "ARKPOSE_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(arkpose.__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    argvs = {name: argv.format(tmp=tmp).split() for name, (argv, _) in ROWS.items()}
    argvs["version"] = ["--version"]
    argvs["predict-nobody"] = (f"predict --checkpoint {tmp}/run/last.pt {tmp}/tiny.png --out "
                               f"{tmp}/p-nobody --device cpu --min-score 0.5").split()
    procs = {name: subprocess.Popen([sys.executable, "-m", "arkpose.cli", *argv], cwd=tmp,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, argv in argvs.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return tmp, done


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input_gets_one_line_and_status_2(results, row):
    tmp, done = results
    res = done[row]
    command = ROWS[row][0].split()[0]
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"arkpose {command}: "), lines[0]
    for text in ROWS[row][1]:
        assert text in lines[0], (text, lines[0])
    assert res.returncode == 2, (res.returncode, res.stderr)
    if row in NOT_CREATED:
        assert not (tmp / NOT_CREATED[row]).exists()


def test_predict_goes_on_after_a_corrupt_image(results):
    tmp, done = results
    out = tmp / "p-corrupt"
    assert sorted(p.name for p in out.iterdir()) == ["000_tiny.png", "002_tiny.png",
                                                      "predictions.json"]
    assert "1 unreadable image(s) skipped" in done["predict-corrupt-among-good"].stdout


def test_predict_counts_only_poses_above_min_score(results):
    _, done = results
    res = done["predict-nobody"]
    assert res.returncode == 0 and res.stderr == ""
    assert "tiny.png: 0 person(s) scoring above 0.5" in res.stdout


def test_version(results):
    _, done = results
    assert done["version"].returncode == 0
    assert done["version"].stdout.strip() == f"arkpose {arkpose.__version__}"


def _parsers():
    from arkpose import train
    from arkpose.cli import COMMANDS, ablate, analyze, eval, predict, rescore, synth

    modules = {"ablate": ablate, "analyze": analyze, "eval": eval, "predict": predict,
               "rescore": rescore}
    parsers = {name: m.build_parser() for name, m in modules.items()}
    parsers["synth"] = synth._parser()
    parsers["train"] = train.build_parser()
    assert sorted(parsers) == sorted(COMMANDS)
    return parsers


@pytest.mark.parametrize("command", ["ablate", "analyze", "eval", "predict", "rescore",
                                     "synth", "train"])
def test_help_explains_every_option_without_rest_markup(command):
    parser = _parsers()[command]
    undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert undocumented == []
    text = parser.format_help()
    assert "``" not in text and ":func:" not in text


@pytest.mark.parametrize("command", ["ablate", "eval", "predict", "rescore", "synth", "train"])
def test_set_takes_several_pairs_and_repeats(command):
    parser = _parsers()[command]
    required = {"eval": ["--checkpoint", "c"], "predict": ["--checkpoint", "c", "img"],
                "rescore": ["--checkpoint", "c"], "synth": ["--out", "o"]}.get(command, [])
    args = parser.parse_args([*required, "--set", "a=1", "b=2", "--set", "c=3"])
    assert args.overrides == ["a=1", "b=2", "c=3"]
