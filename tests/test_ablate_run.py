"""`arkpose ablate` end to end on the smoke preset: two seeds, notebooks, reuse and non-reuse."""

import json

import pandas as pd
import pytest

from arkpose.cli import ablate as command

REPORT_FILES = (
    "table4.html", "error_analysis.html", "stn_sampling.html", "table4.md", "table4.csv",
    "table4_deltas.md", "table4_deltas.csv", "table4_forest.png", "per_seed.csv", "rows.csv",
    "deltas.csv", "provenance.json", "fig4_errors.csv", "fig4_keypoints_final.png",
    "fig3_sampling_positions.png",
)
PROVENANCE = ("arkpose", "git_commit", "date", "device", "threads", "preset", "seeds", "train_commits",
              "dataset_digest", "oks_sigma_scale", "evaluation", "unit_init", "wall_s_per_row")


def _scorer_of(root, row, seed):
    """The scorer digest the row's evaluation used (None: naive scoring)."""
    identity = json.loads((root / row / f"seed-{seed}" / "eval" / "identity.json").read_text())
    return identity["inputs"]["scorer"]


@pytest.mark.slow
def test_smoke_ablation_end_to_end(tmp_path, capsys):
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    argv = ["--preset", "smoke", "--seeds", "2", "--runs", str(runs), "--reports", str(reports)]
    assert command.main(argv) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "each component against the row above" in out
    root, report = runs / "table4-smoke", reports / "table4-smoke"
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

    # A changed override reuses nothing, and says so in one line per run.
    assert command.main([*argv, "--no-notebooks", "--set", "optim.lr=0.002"]) == 0
    err = capsys.readouterr().err
    changed = [line for line in err.splitlines() if "not reusing" in line]
    assert len(changed) == 5 * 2  # 4 trained rows and the reusing row, 2 seeds each
    trained = [line for line in changed if "+scoring" not in line]
    assert len(trained) == 4 * 2 and all("optim.lr 0.001 -> 0.002" in line for line in trained)
    second = pd.read_csv(root / "per_seed.csv").set_index(["row", "seed"]).sort_index()
    assert not set(second["train_digest"]) & set(first["train_digest"])
    assert not set(second["eval_digest"]) & set(first["eval_digest"])
    assert len(list((root / "superseded").iterdir())) == 5 * 2


def test_a_trained_row_with_learned_scoring_is_evaluated_with_its_scorer(tmp_path, monkeypatch):
    """`learned_scoring: true` on a row that trains (no `reuse`): its scorer is trained from
    its own checkpoint and its evaluation uses it (the heavy steps are recorded, not run)."""
    from arkpose import ablate, ablation_report

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
    ablate.run_ablation(ablate.load_ablation(definition), "smoke", seeds=(0,), analyse=False,
                        runs_dir=tmp_path / "runs", progress=False, log=lambda line: None)
    scorer = tmp_path / "runs/d-smoke/scored/seed-0/scorer/scorer.pt"
    assert calls == [("plain", "plain", None), ("scored", "scored", scorer)]


@pytest.mark.slow
def test_a_failing_notebook_never_lands_in_the_report(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from arkpose import ablation_report

    def notebook(body):
        cell = new_code_cell("value = 1")
        cell.metadata["tags"] = ["parameters"]
        book = new_notebook(cells=[cell, new_code_cell(body)])
        book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / f"{abs(hash(body))}.ipynb"
        nbformat.write(book, path)
        return path

    report = tmp_path / "report"
    with pytest.raises(Exception, match="boom"):
        ablation_report.execute_notebook(notebook("raise ValueError('boom')"), report / "bad.ipynb", {})
    assert not (report / "bad.ipynb").exists() and not (report / "bad.html").exists()
    assert (report / ".bad.partial.ipynb").is_file()  # kept, hidden, to show where it stopped
    ablation_report.execute_notebook(notebook("print(value * 2)"), report / "good.ipynb", {"value": 21})
    assert "42" in (report / "good.ipynb").read_text() and (report / "good.html").is_file()
    assert not (report / ".good.partial.ipynb").exists()
