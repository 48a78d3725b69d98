"""Where notebooks find the project, stored data paths, training curves, atomic figures and
the report landing pages, on hand-made inputs (the notebooks themselves run on a smoke
ablation in test_ablate_run.py)."""

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from arkpose import ablation_report, checkpoint, config, curves, notebooks, presets, report_index


class Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


def page_links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.links


def make_project(root: Path) -> Path:
    for folder in ("ablations", "notebooks", "runs/ablations/t"):
        (root / folder).mkdir(parents=True)
    return root


def test_relative_notebook_paths_resolve_from_the_root_and_from_notebooks(tmp_path):
    project = make_project(tmp_path / "proj")
    for start in (project, project / "notebooks", project / "runs" / "ablations" / "t"):
        assert notebooks.project_root(start) == project.resolve()
        assert notebooks.project_path("runs/ablations/t", start) == project.resolve() / "runs/ablations/t"
    assert notebooks.project_path("/abs/run", project / "notebooks") == Path("/abs/run")
    # Outside any project: the repository arkpose is installed from (editable install).
    assert notebooks.project_root(tmp_path) == notebooks.NOTEBOOKS.parent


def _save(path: Path, data_root: str) -> None:
    cfg = presets.preset("smoke")
    cfg.data.root = data_root
    checkpoint.save_checkpoint(path, {"config": config.to_dict(cfg), "model": {}})


def test_a_checkpoint_finds_its_data_from_any_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data" / "synth").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "runs" / "a" / "last.pt", "data/synth")  # relative to where training ran
    state = checkpoint.load_checkpoint(tmp_path / "runs" / "a" / "last.pt")
    assert state["paths"] == {"data.root": "../../data/synth"}
    assert state["config"]["data"]["root"] == "data/synth"  # the config itself is kept as given
    monkeypatch.chdir(tmp_path / "elsewhere")
    expected = str((tmp_path / "data" / "synth").resolve())
    assert checkpoint.data_root(state, tmp_path / "runs" / "a" / "last.pt") == expected
    # Runs and data moved together: still found, through the relative entry.
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "runs").rename(moved / "runs")
    (tmp_path / "data").rename(moved / "data")
    assert checkpoint.data_root(state, moved / "runs" / "a" / "last.pt") == str((moved / "data" / "synth").resolve())


def test_an_older_checkpoint_finds_its_relative_data_root_above_it(tmp_path, monkeypatch):
    (tmp_path / "data" / "synth").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "data")
    cfg = config.to_dict(presets.preset("smoke"))
    cfg["data"]["root"] = "data/synth"
    legacy = {"config": cfg}  # no "paths": written before they were stored
    found = checkpoint.data_root(legacy, tmp_path / "runs" / "x" / "seed-0" / "last.pt")
    assert found == str((tmp_path / "data" / "synth").resolve())
    cfg["data"]["root"] = "data/gone"
    assert checkpoint.data_root(legacy, tmp_path / "runs" / "last.pt") == "data/gone"


def test_loss_curve_points_are_image_weighted_means_over_runs_of_steps(monkeypatch):
    monkeypatch.setattr(curves, "POINTS_PER_EPOCH", 2)
    curve = curves.LossCurve(epoch=1, steps_per_epoch=5, device=torch.device("cpu"))
    assert curve.every == 3
    points = [curve.add(torch.tensor(v), n, step) for step, (v, n) in
              enumerate([(1.0, 2), (4.0, 1), (2.0, 1), (3.0, 4), (5.0, 4)], start=1)]
    assert points[:2] == [None, None] and points[3] is None
    # steps 1-3: (1*2 + 4*1 + 2*1) / 4 = 2.0 at global step 5 + 3; steps 4-5: 4.0 at 5 + 5.
    assert points[2] == [8, 2.0] and points[4] == [10, 4.0]
    assert curve.points == [[8, 2.0], [10, 4.0]]


def test_read_curves_of_a_run_recorded_before_loss_curves(tmp_path):
    lines = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "val_AP": 0.125}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert curves.read_curves(tmp_path) == {"loss": [[1.0, 0.5], [2.0, 0.25]], "loss_unit": "epoch",
                                            "val": [[2, 0.125]]}
    with pytest.raises(FileNotFoundError, match="training run folder"):
        curves.read_curves(tmp_path / "nothing")


def test_tensorboard_without_its_package_is_one_config_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    cfg = presets.preset("smoke")
    curves.check_tensorboard(cfg)  # off: nothing needed
    cfg.tensorboard = True
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(config.ConfigError, match=r"pip install -e '\.\[tensorboard\]'"):
        curves.check_tensorboard(cfg)


def test_figures_are_saved_as_png_and_svg_and_a_failed_save_leaves_nothing(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = ablation_report.save_figure(fig, tmp_path / "f.png", {"commit": "abc"})
    assert png == tmp_path / "f.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"abc" in (tmp_path / "f.svg").read_bytes()

    def broken(*args, **kwargs):
        Path(args[0]).write_bytes(b"")  # a 0-byte file, then the failure
        raise OSError("disk full")

    fig.savefig = broken
    with pytest.raises(OSError):
        ablation_report.save_figure(fig, tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]
    plt.close(fig)


def _report_folder(folder: Path) -> None:
    """The files the notebooks leave in a report folder, with hand-made numbers."""
    folder.mkdir(parents=True)
    prov = {"preset": "smoke", "ablation": "table4", "seeds": [0, 1], "date": "2026-12-07T05:00",
            "git_commit": "0123456789abcdef", "device": "cpu"}
    (folder / "provenance.json").write_text(json.dumps(prov))
    nan = float("nan")
    pd.DataFrame({"row": ["baseline", "+guidance"], "regression": [20.0, 21.5],
                  "regression ci_low": [19.0, 20.0], "regression ci_high": [21.0, 23.0],
                  "regression (paper)": [63.3, 64.2], **{
                      f"{q}{s}": [nan, nan] for q in ("heatmap", "final")
                      for s in ("", " ci_low", " ci_high", " (paper)")}}).to_csv(folder / "table4.csv", index=False)
    pd.DataFrame([{"component": "+guidance", "quality": "regression", "delta": 1.5, "ci_low": -0.5,
                   "ci_high": 3.5, "p_improve": 0.9, "verdict": "within noise", "paper_delta": 0.9,
                   "seeds": 2}]).to_csv(folder / "table4_deltas.csv", index=False)
    for name in ("table4_forest.png", "table4_forest.svg", "training_curves.png",
                 "fig4_keypoints.png", "table4.ipynb", "table4.html", "explore.ipynb"):
        (folder / name).write_bytes(b"x")
    (folder / ".table4.partial.ipynb").write_bytes(b"x")  # a killed run's leftover: not linked
    for name in ("fig4_keypoints_final.png", "stn_sampling.ipynb"):  # an earlier report's leftovers
        (folder / name).write_bytes(b"x")
        old = (folder / "provenance.json").stat().st_mtime - 3600
        os.utime(folder / name, (old, old))


def test_index_pages_link_only_to_files_that_exist(tmp_path):
    reports = tmp_path / "reports"
    _report_folder(reports / "table4-smoke")
    pages = report_index.write_all(reports)
    assert pages == [reports / "table4-smoke" / "index.html", reports / "index.html"]
    run_page = pages[0].read_text()
    assert "21.5 [20.0, 23.0]" in run_page and "within noise" in run_page
    links = page_links(pages[0])
    assert {"table4_forest.png", "table4_forest.svg", "training_curves.png", "fig4_keypoints.png",
            "table4.html", "table4.ipynb", "explore.ipynb", "../index.html"} <= set(links)
    assert not [link for link in links if "partial" in link or link.startswith("/")]
    assert "explore.html" not in links  # the explorer's HTML was not written: not linked
    assert "fig4_keypoints_final.png" not in links and "stn_sampling.ipynb" not in links
    for page in pages:
        for link in page_links(page):
            assert (page.parent / link).exists(), (page, link)
    assert page_links(pages[1]) == ["table4-smoke/index.html"]


def test_a_report_folder_without_provenance_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the report notebooks first"):
        report_index.run_page(tmp_path)
    assert not os.listdir(tmp_path)


def test_make_lab_starts_jupyter_lab_at_the_repository_root():
    import subprocess

    repo = notebooks.NOTEBOOKS.parent
    plan = subprocess.run(["make", "-n", "lab"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert f'jupyter lab --notebook-dir="{repo}"' in plan
