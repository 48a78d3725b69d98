"""`arkpose ablate` end to end on the smoke preset: two seeds, notebooks (from the project
root and from notebooks/), the report pages, reuse and non-reuse."""

import contextlib
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from arkpose import notebooks, runtime
from arkpose.cli import ablate as command

REPO = Path(__file__).resolve().parents[1]
REPORT_FILES = (
    "index.html", "table4.html", "error_analysis.html", "stn_sampling.html", "explore.html",
    "table4.md", "table4.csv", "table4_deltas.md", "table4_deltas.csv", "table4_forest.png",
    "table4_forest.svg", "training_curves.png", "per_seed.csv", "rows.csv", "deltas.csv",
    "provenance.json", "fig4_errors.csv", "fig4_keypoints.png", "fig4_isolated_ap_gain.png",
    "fig3_sampling_positions.png", "fig3_transform_vs_geometry.png",
)
PROVENANCE = ("arkpose", "git_commit", "date", "device", "threads", "preset", "seeds", "train_commits",
              "dataset_digest", "oks_sigma_scale", "evaluation", "unit_init", "wall_s_per_row")
NOTEBOOKS = ("table4.ipynb", "error_analysis.ipynb", "stn_sampling.ipynb", "explore.ipynb")


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    """A project folder (its own ablations/ and notebooks/) holding a 2-seed smoke ablation
    run with its reports; returns (project, what the command printed)."""
    project = tmp_path_factory.mktemp("project")
    for folder in ("ablations", "notebooks"):
        shutil.copytree(REPO / folder, project / folder)
    # 200 resamples keep the intervals meaningful and the three summaries below quick
    argv = ["--preset", "smoke", "--seeds", "2", "--n-boot", "200", "--runs", str(project / "runs" / "ablations"),
            "--reports", str(project / "reports"), "--ablation", str(project / "ablations" / "table4.yaml")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert command.main(argv) == 0
    return project, argv, out.getvalue()


def _scorer_of(root, row, seed):
    """The scorer digest the row's evaluation used (None: naive scoring)."""
    identity = json.loads((root / row / f"seed-{seed}" / "eval" / "identity.json").read_text())
    return identity["inputs"]["scorer"]


class Images(HTMLParser):
    """Embedded PNGs (notebook outputs) and every link of an HTML page."""

    def __init__(self):
        super().__init__()
        self.embedded, self.links = 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.embedded += tag == "img" and attrs.get("src", "").startswith("data:image/png")
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v and not v.startswith(("data:", "#"))]


def check_executed(notebook: Path) -> None:
    """Each cell tagged "figure" shows exactly one image, no cell wrote to stderr, and the
    HTML export embeds one image per figure cell."""
    book = nbformat.read(notebook, as_version=4)
    figure_cells = [c for c in book.cells if "figure" in c.metadata.get("tags", [])]
    assert figure_cells, notebook
    for cell in figure_cells:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, (notebook.name, cell.source[:80])
    stderr = [o.text for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, (notebook.name, stderr)
    page = Images()
    page.feed(notebook.with_suffix(".html").read_text())
    assert page.embedded == len(figure_cells), notebook.name


@pytest.mark.slow
@pytest.mark.parametrize("start", ["", "notebooks"])
def test_every_notebook_runs_with_relative_paths_from_the_root_and_from_notebooks(smoke_project, start):
    project, _, _ = smoke_project
    report = project / "reports" / f"from-{start or 'root'}"
    params = {"run_root": "runs/ablations/table4-smoke", "report_dir": str(report.relative_to(project)),
              "row": "+adaptive", "seed": 1}
    for name in NOTEBOOKS:
        executed = notebooks.execute_notebook(project / "notebooks" / name, report / name, params,
                                              cwd=project / start)
        check_executed(executed)
    assert (report / "fig3_sampling_positions.png").stat().st_size > 0


@pytest.mark.slow
def test_the_command_records_its_wall_time_and_the_fp32_ceiling(smoke_project):
    project, argv, printed = smoke_project
    for folder in (project / "runs/ablations/table4-smoke", project / "reports/table4-smoke"):
        wall = json.loads((folder / "wall.json").read_text())
        assert wall["command"] == "arkpose ablate " + " ".join(argv) and wall["threads"] >= 1
        assert wall["wall_s"] > 10 and min(wall["fp32_ceiling_gmac_s"].values()) > 0.1
    assert f"wall {wall['wall_s'] / 60:.1f} min" in printed


@pytest.mark.slow
def test_report_pages_show_every_part_and_link_only_to_existing_files(smoke_project):
    project, _, _ = smoke_project
    report = project / "reports" / "table4-smoke"
    for name in NOTEBOOKS:
        check_executed(report / name)
    run_page, root_page = report / "index.html", project / "reports" / "index.html"
    text = run_page.read_text()
    assert "Δ ours [95% CI]" in text and "Provenance" in text
    links = {}
    for page in (run_page, root_page):
        parser = Images()
        parser.feed(page.read_text())
        links[page] = parser.links
        for link in parser.links:
            assert (page.parent / link).is_file(), (page, link)
    assert {"table4_forest.png", "training_curves.png", "fig4_keypoints.png",
            "fig3_sampling_positions.png", "table4.html", "error_analysis.html",
            "stn_sampling.html", "explore.html"} <= set(links[run_page])
    assert "table4-smoke/index.html" in links[root_page]


def _same_ablation_into(smoke_project, runs: Path) -> list[str]:
    """The fixture's command line with its runs folder replaced by ``runs``."""
    project, argv, _ = smoke_project
    return [a if a != str(project / "runs" / "ablations") else str(runs) for a in argv]


def _assert_same_numbers(root: Path, smoke_project) -> None:
    """Bit for bit the AP and AR (and the training digests) of the fixture's in-process run."""
    theirs = pd.read_csv(root / "per_seed.csv").set_index(["row", "seed"])
    inprocess = pd.read_csv(smoke_project[0] / "runs" / "ablations" / "table4-smoke" / "per_seed.csv"
                            ).set_index(["row", "seed"])
    numbers = [c for c in inprocess.columns if c.rsplit("_", 1)[-1].startswith(("AP", "AR"))]
    assert len(numbers) >= 3 * 10
    pd.testing.assert_frame_equal(theirs[numbers + ["train_digest"]], inprocess[numbers + ["train_digest"]])


@pytest.mark.slow
def test_the_local_launcher_gives_the_numbers_of_the_in_process_run(smoke_project, tmp_path, capsys):
    """The same ablation with every training a submitit job (2 parallel local processes):
    the same runs (digests) and, bit for bit, the same AP and AR."""
    argv = _same_ablation_into(smoke_project, tmp_path / "runs")
    assert command.main([*argv, "--launcher", "local", "--jobs", "2", "--no-notebooks", "--no-analysis"]) == 0
    err = capsys.readouterr().err
    assert err.count("submitted as local job") == 4 * 2 and err.count("finished") >= 4 * 2
    _assert_same_numbers(tmp_path / "runs" / "table4-smoke", smoke_project)
    assert (tmp_path / "runs" / "table4-smoke" / "jobs").is_dir()  # job logs live in the run folder


@pytest.mark.slow
def test_the_pool_launcher_gives_the_numbers_of_the_in_process_run(smoke_project, tmp_path, capsys,
                                                                   monkeypatch):
    """The same ablation in 2 worker processes (arkpose.pool), each with half of
    ARKPOSE_THREADS=4: the 2 threads of the in-process run, so bit for bit its AP and AR."""
    argv = _same_ablation_into(smoke_project, tmp_path / "runs")
    monkeypatch.setenv(runtime.THREADS_ENV, "4")
    try:
        assert command.main([*argv, "--launcher", "pool", "--jobs", "2", "--no-notebooks"]) == 0
    finally:
        monkeypatch.setenv(runtime.THREADS_ENV, "2")
        runtime.configure_threads()
    err = capsys.readouterr().err
    # 2 seeds: 4 groups, the last split by trained row (baseline, +guidance of seed 1).
    assert "pool: 10 jobs in 5 groups, 2 worker process(es) of 2 thread(s)" in err
    assert err.count("pool: done") == 5
    root = tmp_path / "runs" / "table4-smoke"
    _assert_same_numbers(root, smoke_project)
    analysis = "plus-adaptive/seed-1/analysis/final/analysis.json"
    reference = smoke_project[0] / "runs" / "ablations" / "table4-smoke" / analysis
    assert (root / analysis).read_text() == reference.read_text()
    prov = json.loads((root / "provenance.json").read_text())
    assert prov["train_threads"] == ["2"] and prov["launcher"] == {"launcher": "pool", "jobs": 2}


@pytest.mark.slow
def test_smoke_ablation_end_to_end(smoke_project, capsys):
    project, argv, out = smoke_project
    assert "95% CI" in out and "each component against the row above" in out
    root, report = project / "runs" / "ablations" / "table4-smoke", project / "reports" / "table4-smoke"
    for name in REPORT_FILES:
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    assert not list(report.glob(".*partial*"))  # executed notebooks were renamed into place
    deltas = pd.read_csv(report / "table4_deltas.csv")
    assert {"delta", "ci_low", "ci_high", "p_improve", "verdict", "paper_delta"} <= set(deltas.columns)
    assert len(deltas) == 4 * 3 and deltas["seeds"].eq(2).all()
    assert deltas["verdict"].isin(["helps", "hurts", "within noise", "no change"]).all()
    prov = json.loads((report / "provenance.json").read_text())
    for key in PROVENANCE:
        assert prov.get(key) not in (None, "", [], {}), key
    assert prov["seeds"] == [0, 1] and prov["preset"] == "smoke"
    assert Path(prov["dataset"]).is_absolute() and Path(prov["dataset"]).is_dir()
    assert "Provenance:" in (report / "table4.md").read_text()
    first = pd.read_csv(root / "per_seed.csv").set_index(["row", "seed"]).sort_index()
    assert len(first) == 5 * 2 and (first.loc["baseline", "train_s"] > 0).all()

    # Learned scoring (+scoring reuses +adaptive's checkpoint and trains its scorer): the
    # final quality is evaluated with it, the other two are the reused row's.
    for seed in (0, 1):
        scored, plain = first.loc[("+scoring", seed)], first.loc[("+adaptive", seed)]
        assert scored.learned_scoring and not plain.learned_scoring
        for quality in ("regression", "heatmap"):
            assert scored[f"{quality}_AP"] == plain[f"{quality}_AP"]
        assert _scorer_of(root, "plus-scoring", seed) is not None
        assert _scorer_of(root, "plus-adaptive", seed) is None

    # The same command again: everything is reused, nothing trains.
    checkpoints = {p: p.stat().st_mtime_ns for p in root.rglob("last.pt")}
    assert command.main([*argv, "--no-notebooks"]) == 0
    err = capsys.readouterr().err
    assert "training into" not in err and err.count("reusing") == 4 * 2
    assert {p: p.stat().st_mtime_ns for p in root.rglob("last.pt")} == checkpoints

    # A changed override reuses nothing, and says so in one line per run (seed 0 alone here).
    seed0 = [a if a != "2" else "0," for a in argv]
    assert command.main([*seed0, "--no-notebooks", "--no-analysis", "--set", "optim.lr=0.002"]) == 0
    err = capsys.readouterr().err
    changed = [line for line in err.splitlines() if "not reusing" in line]
    assert len(changed) == 5  # 4 trained rows and the reusing row
    trained = [line for line in changed if "+scoring" not in line]
    assert len(trained) == 4 and all("optim.lr 0.001 -> 0.002" in line for line in trained)
    second = pd.read_csv(root / "per_seed.csv").set_index(["row", "seed"]).sort_index()
    assert not set(second["train_digest"]) & set(first["train_digest"])
    assert not set(second["eval_digest"]) & set(first["eval_digest"])
    assert len(list((root / "superseded").iterdir())) == 5


def test_a_trained_row_with_learned_scoring_is_evaluated_with_its_scorer(tmp_path, monkeypatch):
    """`learned_scoring: true` on a row that trains (no `reuse`): its scorer is trained from
    its own checkpoint and its evaluation uses it (the heavy steps are recorded, not run)."""
    from arkpose import ablate, ablation_def, ablation_report

    definition = tmp_path / "d.yaml"
    definition.write_text("name: d\nrows:\n  - {name: plain}\n  - {name: scored, learned_scoring: true}\n")
    calls = []

    def fake_scorer(job, train_digest, root, log, progress):
        path = job.train_folder / "scorer" / "scorer.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(job.row.name.encode())
        return path

    def fake_eval(job, checkpoint, out, qualities, *, scorer, max_images, progress):
        calls.append((job.row.name, checkpoint.parent.parent.name, scorer))
        return {q: {"AP": 0.0} for q in qualities}

    monkeypatch.setattr(ablate, "train_row", lambda cfg, out, progress: out / "last.pt")
    monkeypatch.setattr(ablate, "ensure_scorer", fake_scorer)
    monkeypatch.setattr(ablate, "evaluate_row", fake_eval)
    monkeypatch.setattr(ablation_report, "write_summary", lambda *args, **kwargs: None)
    monkeypatch.setattr(ablation_report, "run_record", lambda *args: {})
    ablate.run_ablation(ablation_def.load_ablation(definition), "smoke", seeds=(0,), analyse=False,
                        runs_dir=tmp_path / "runs", progress=False, log=lambda line: None)
    scorer = tmp_path / "runs/d-smoke/scored/seed-0/scorer/scorer.pt"
    assert calls == [("plain", "plain", None), ("scored", "scored", scorer)]


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("preset, folder, annotations, spec", [
    ("coco-w32", "coco", "test_coco.json", "coco"),
    ("crowdpose-w32", "crowdpose", "test_crowdpose.json", "crowdpose"),
])
def test_the_real_data_table4_runs_end_to_end(real_fixtures, tmp_path, preset, folder, annotations, spec):
    """Every step of the real-data ablation on ../shared/real_fixtures (the same images as
    train and val; a nano model for one epoch: the numbers mean nothing, the path is tested)."""
    data = real_fixtures / folder
    argv = ["--preset", preset, "--data", str(data), "--seeds", "1", "--runs", str(tmp_path / "runs"),
            "--reports", str(tmp_path / "reports"), "--set", "model.backbone=nano-w16", "optim.epochs=1",
            "optim.batch_size=2", "data.input_size=128", "eval.test_size=128", "data.workers=0",
            f"data.train_ann={annotations}", "data.train_images=.", f"data.val_ann={annotations}",
            "data.val_images=.",
            # a one-epoch model's centers are all weak: keep them, so the scorer has candidates
            "eval.decode.center_threshold=0"]
    assert command.main(argv) == 0
    root, report = tmp_path / "runs" / f"table4-{preset}", tmp_path / "reports" / f"table4-{preset}"
    per_seed = pd.read_csv(root / "per_seed.csv")
    assert len(per_seed) == 5 and per_seed["learned_scoring"].sum() == 1
    assert (root / "plus-adaptive" / "seed-0" / "scorer" / "scorer.pt").is_file()
    for row in ("baseline", "plus-adaptive"):
        for quality in ("regression", "heatmap", "final"):
            analysis = json.loads((root / row / "seed-0" / "analysis" / quality / "analysis.json").read_text())
            assert analysis["compat"] == "coco-analyze" and analysis["spec"] == spec
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["dataset"] == str(data.resolve()) and prov["preset"] == preset
    for name in NOTEBOOKS:
        check_executed(report / name)
    assert (report / "index.html").is_file()


def _tiny_notebook(folder: Path, name: str, body: str) -> Path:
    """A notebook with a ``value = 1`` parameters cell and ``body``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cell = new_code_cell("value = 1")
    cell.metadata["tags"] = ["parameters"]
    book = new_notebook(cells=[cell, new_code_cell(body)])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / name
    nbformat.write(book, path)
    return path


@pytest.mark.slow
def test_a_failing_notebook_never_lands_in_the_report(tmp_path):
    report = tmp_path / "report"
    with pytest.raises(Exception, match="boom"):
        notebooks.execute_notebook(_tiny_notebook(tmp_path, "bad.ipynb", "raise ValueError('boom')"),
                                   report / "bad.ipynb", {})
    assert not (report / "bad.ipynb").exists() and not (report / "bad.html").exists()
    assert (report / ".bad.partial.ipynb").is_file()  # kept, hidden, to show where it stopped
    notebooks.execute_notebook(_tiny_notebook(tmp_path, "good.ipynb", "print(value * 2)"),
                               report / "good.ipynb", {"value": 21})
    assert "42" in (report / "good.ipynb").read_text() and (report / "good.html").is_file()
    assert not (report / ".good.partial.ipynb").exists()


@pytest.mark.slow
def test_notebooks_run_two_at_once_with_a_share_of_the_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("ARKPOSE_THREADS", "2")
    _tiny_notebook(tmp_path, "threads.ipynb", "import os\nprint('threads', os.environ['ARKPOSE_THREADS'])")
    _tiny_notebook(tmp_path, "bad.ipynb", "raise ValueError('boom')")
    _tiny_notebook(tmp_path, "double.ipynb", "print(value * 2)")
    report, lines = tmp_path / "report", []
    wanted = [("threads.ipynb", {}), ("bad.ipynb", {}), ("double.ipynb", {"value": 21})]
    with pytest.raises(notebooks.NotebookFailed, match=r"(?s)bad\.ipynb: PapermillExecutionError.*boom"):
        notebooks.run_report_notebooks(wanted, report, lines.append, workers=2, source=tmp_path)
    assert not (report / "bad.ipynb").exists() and not lines
    assert "threads 1" in (report / "threads.ipynb").read_text()  # the others finished
    assert "42" in (report / "double.ipynb").read_text()
    done = notebooks.run_report_notebooks([wanted[2], wanted[0]], report, lines.append, workers=2,
                                          source=tmp_path)
    assert done == [report / "double.ipynb", report / "threads.ipynb"]
    assert lines == [f"report: {report / 'double.html'}", f"report: {report / 'threads.html'}"]
