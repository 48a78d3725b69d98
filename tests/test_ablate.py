import json
from pathlib import Path

import pandas as pd
import pytest

from arkpose import ablate, ablation_def, config, presets

REPO = Path(__file__).resolve().parents[1]


def test_table4_definition_matches_the_paper_rows():
    definition = ablation_def.load_ablation(REPO / "ablations" / "table4.yaml")
    assert [r.name for r in definition.rows] == [
        "baseline", "+guidance", "+tradeoff", "+adaptive", "+scoring"
    ]
    base = presets.preset("quick")
    switches = [
        (c.model.guidance, c.loss.tradeoff, c.model.adaptive, c.eval.learned_scoring)
        for c in (ablate.row_config(base, r) for r in definition.rows)
    ]
    # Each row switches on exactly one more component than the row above.
    assert switches == [
        (False, False, False, False),
        (True, False, False, False),
        (True, True, False, False),
        (True, True, True, False),
        (True, True, True, True),
    ]
    assert definition.rows[-1].reuse == "+adaptive"
    assert definition.rows[1].slug == "plus-guidance"


def _write(tmp_path, text):
    path = tmp_path / "a.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("rows: []", "non-empty 'rows'"),
        ("rows:\n  - {set: {}}", "row 0 needs a 'name'"),
        ("rows:\n  - {name: a, sett: {}}", "unknown keys \\['sett'\\]"),
        ("rows:\n  - {name: a, set: {model.adaptiv: true}}", "row 'a'.*unknown config key"),
        ("rows:\n  - {name: a}\n  - {name: b, reuse: c}", "reuses 'c'"),
        ("rows:\n  - {name: a}\n  - {name: a}", "unique"),
        ("rows: [", "not valid yaml"),
    ],
)
def test_bad_definitions_name_the_problem(tmp_path, text, message):
    with pytest.raises(ablate.AblationError, match=message):
        ablation_def.load_ablation(_write(tmp_path, text))


def test_missing_definition(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        ablation_def.load_ablation(tmp_path / "nope.yaml")


def test_ablate_command_reports_bad_input_in_one_line(tmp_path, capsys):
    from arkpose.cli import ablate as command

    assert command.main(["--ablation", str(tmp_path / "nope.yaml")]) == 2
    assert "arkpose ablate: ablation definition" in capsys.readouterr().err
    assert command.main(["--preset", "smoke", "--set", "model.adaptiv=false",
                         "--runs", str(tmp_path / "runs"), "--data", str(tmp_path)]) == 2
    assert "unknown config key 'model.adaptiv'" in capsys.readouterr().err


def test_stale_synthpose_data_is_refused_with_the_fix(tmp_path):
    from arkpose.data import synth

    root = tmp_path / "sp"
    synth.generate(root, "smoke", train=2, val=1, progress=False)  # not the smoke preset's counts
    cfg = presets.preset("smoke")
    cfg.data.root = str(root)
    with pytest.raises(synth.SynthError, match=rf"other arguments.*--out {root} --preset smoke --force"):
        ablate.ensure_data(cfg, progress=False)


def test_user_overrides_apply_after_the_row():
    row = ablate.Row("r", {"model.adaptive": False, "optim.epochs": 3})
    cfg = ablate.row_config(presets.preset("smoke"), row, ["optim.epochs=1"])
    assert cfg.model.adaptive is False and cfg.optim.epochs == 1 and cfg.name == "r"


def _summary(tmp_path, seeds=(0, 1)):
    """A hand-made format-2 summary: two rows and an extra row the paper does not have."""
    rows = [{"row": n, "paper_method": m, "slug": n, "reuse": None}
            for n, m in (("baseline", "baseline"), ("+guidance", "+guidance"), ("extra", "not-in-paper"))]
    stats = []
    for name, ap in (("baseline", 0.5), ("+guidance", 0.52), ("extra", 0.1)):
        for quality in ablate.QUALITIES:
            stats.append({"row": name, "quality": quality, "AP": ap, "ci_low": ap - 0.01, "ci_high": ap + 0.02})
    deltas = [{"row": "+guidance", "vs": "baseline", "quality": q, "delta": 0.02, "ci_low": -0.01,
               "ci_high": 0.05, "p_improve": 0.9, "verdict": "within noise", "seeds": len(seeds)}
              for q in ablate.QUALITIES]
    summary = {"format": 2, "rows": rows, "row_stats": stats, "deltas": deltas,
               "paper_table": "T4", "seeds": list(seeds)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return summary


def test_report_tables_put_ours_beside_the_paper(tmp_path):
    from arkpose import ablation_report as report

    _summary(tmp_path)
    summary = report.load_summary(tmp_path)
    table = report.rows_with_paper(summary, REPO / "ablations" / "paper_numbers.csv")
    assert table.loc["baseline", "regression"] == pytest.approx(50.0)
    assert table.loc["baseline", "regression ci_high"] == pytest.approx(52.0)
    assert table.loc["baseline", "regression (paper)"] == pytest.approx(59.6)
    assert table.loc["+guidance", "final (paper)"] == pytest.approx(64.9)
    assert pd.isna(table.loc["extra", "heatmap (paper)"])
    deltas = report.deltas_with_paper(summary, REPO / "ablations" / "paper_numbers.csv")
    final = deltas.set_index(["component", "quality"]).loc[("+guidance", "final")]
    assert final.delta == pytest.approx(2.0) and final.ci_high == pytest.approx(5.0)
    assert final.paper_delta == pytest.approx(0.4) and final.verdict == "within noise"
    assert report.format_interval(22.14, 20.3, 23.81) == "22.1 [20.3, 23.8]"
    assert report.format_interval(22.14, float("nan"), float("nan")) == "22.1 [?]"
    md = report.to_markdown(table)
    assert md.splitlines()[0].startswith("| row | regression |")
    assert "| extra |" in md and "–" in md.splitlines()[4]


def test_a_summary_of_an_older_arkpose_is_refused(tmp_path):
    from arkpose import ablation_report as report

    (tmp_path / "summary.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ablate.AblationError, match="older arkpose"):
        report.load_summary(tmp_path)
    with pytest.raises(FileNotFoundError, match="run `arkpose ablate` first"):
        report.load_summary(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "text, seeds",
    [(None, (0, 1, 2)), ("2", (0, 1)), ("0,1,2", (0, 1, 2)), ("5,", (5,)), (" 3, 7 ", (3, 7))],
)
def test_seeds_parse(text, seeds):
    assert ablation_def.parse_seeds(text, 3) == seeds


@pytest.mark.parametrize("text", ["0", "-1", "a,b", "1,-2", "1,1", ",", "1.5"])
def test_bad_seeds_name_the_fix(text):
    with pytest.raises(ablate.AblationError, match="--seeds"):
        ablation_def.parse_seeds(text, 3)


def test_run_identity_changes_with_every_field_but_the_seed_count(tmp_path):
    from arkpose import provenance
    from arkpose.data import synth

    root = tmp_path / "sp"
    synth.generate(root, "smoke", train=2, val=1, progress=False)
    cfg = presets.preset("smoke")
    cfg.data.root = str(root)
    ident = provenance.identity(provenance.run_inputs(cfg))
    same = config.clone(cfg)
    same.ablation_seeds = 7
    assert provenance.identity(provenance.run_inputs(same))["digest"] == ident["digest"]
    for key, value in (("seed", 1), ("optim.epochs", 3), ("model.unit_init", "normal"),
                       ("eval.decode.flip", False), ("data.oks_sigma_scale", 2.0)):
        changed = config.apply_overrides(config.clone(cfg), {key: value})
        other = provenance.identity(provenance.run_inputs(changed))
        assert other["digest"] != ident["digest"], key
        assert provenance.describe_change(ident, other).startswith(key), key
    ann = root / cfg.data.val_ann
    ann.write_text(ann.read_text().replace('"images"', '"images" ', 1))  # the data changed
    assert provenance.identity(provenance.run_inputs(cfg))["digest"] != ident["digest"]


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_bad_runs_folders_and_overrides_change_nothing(tmp_path, capsys):
    from arkpose.cli import ablate as command

    runs = tmp_path / "runs"
    old = runs / "table4-smoke" / "baseline"
    old.mkdir(parents=True)
    (old / "done.json").write_text("{}")  # the layout before seeds and digests
    before = _tree(runs)
    argv = ["--preset", "smoke", "--runs", str(runs), "--reports", str(tmp_path / "rep")]
    assert command.main(argv) == 2
    err = capsys.readouterr().err
    assert "written by an older arkpose" in err and "another --runs" in err and len(err.splitlines()) == 1
    (old / "done.json").unlink()
    (old / "seed-0").mkdir()
    (old / "seed-0" / "last.pt").write_text("x")  # files but no identity.json
    before = _tree(runs)
    assert command.main(argv) == 2
    assert "no readable identity.json" in capsys.readouterr().err
    assert command.main([*argv, "--set", "seed=3"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert command.main([*argv, "--seeds", "1,x"]) == 2
    assert "not a list of non-negative integers" in capsys.readouterr().err
    assert _tree(runs) == before
    assert not (tmp_path / "rep").exists()


def test_claim_supersedes_a_changed_run_in_one_line(tmp_path):
    from arkpose import provenance

    root = tmp_path
    folder = root / "row" / "seed-0"
    lines = []
    first = provenance.identity({"config": {"optim.epochs": 10}})
    assert ablate._claim(folder, first, root, "row seed 0", lines.append) is False
    (folder / "done.json").write_text("{}")
    assert ablate._claim(folder, first, root, "row seed 0", lines.append) is True
    assert lines == []
    second = provenance.identity({"config": {"optim.epochs": 3}})
    assert ablate._claim(folder, second, root, "row seed 0", lines.append) is False
    assert len(lines) == 1 and "optim.epochs 10 -> 3" in lines[0] and "not reusing" in lines[0]
    assert not (folder / "done.json").exists()  # the old run moved, not reused
    moved = list((root / "superseded").iterdir())
    assert len(moved) == 1 and (moved[0] / "done.json").is_file()


def test_analysis_json_round_trip_keeps_nan(real_fixtures, tmp_path):
    import math

    from arkpose.analysis import AnalysisResult, analyze

    coco = real_fixtures / "coco"
    # No detections for 3 of the 4 images and an empty size bucket: NaNs in the result.
    dets = [d for d in json.loads((coco / "example_coco_preds.json").read_text())
            if d["image_id"] == 785]
    result = analyze(str(coco / "test_coco.json"), dets)
    back = AnalysisResult.from_json(result.to_json(tmp_path / "a.json") and tmp_path / "a.json")
    assert back.ap() == pytest.approx(result.ap())
    assert back.summary_table() == result.summary_table()
    nan_in = [k for k, v in result.isolated["mean"].items() if math.isnan(v["all"])]
    assert all(math.isnan(back.isolated["mean"][k]["all"]) for k in nan_in)


def test_publish_quotes_the_report_files_in_the_readme(tmp_path):
    from arkpose import publish as report

    rep = tmp_path / "reports" / "table4-quick"
    rep.mkdir(parents=True)
    for name in report.PUBLISHED:
        (rep / name).write_text("x\n")
    (rep / "table4.md").write_text("| row | final (ours) |\n|---|---|\n| baseline | 26.7 [25.0, 28.4] |\n"
                                   "\nProvenance:\n\n- seeds: [0, 1, 2]\n")
    (rep / "table4_deltas.md").write_text("| component | verdict |\n|---|---|\n| +guidance | helps |\n")
    prov = {"preset": "quick", "seeds": [0, 1, 2], "git_commit": "abcdef1234567", "git_dirty": False,
            "train_commits": ["1234567890" * 4, "fedcba9876" * 4 + " (dirty)"],
            "device": "AMD EPYC", "threads": 2, "date": "2026-12-07T03:00:00+00:00",
            "wall_s_per_row": {"baseline": 900.0, "+adaptive": 1800.0}}
    (rep / "provenance.json").write_text(json.dumps(prov))
    (rep / "table4_strata.md").write_text("strata\n")  # optional, present; fig3_stn_numbers.csv absent
    (rep / "wall.json").write_text(json.dumps({"command": "arkpose ablate --preset quick", "wall_s": 1500.0,
                                               "threads": 2, "fp32_ceiling_gmac_s": {"start": 80.1, "end": 79.0}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_BEGIN}\nold numbers\n{report.README_END}\nafter\n")
    target = report.publish(rep, readme, tmp_path / "docs" / "results")
    assert target == tmp_path / "docs/results/table4-quick"
    assert all((target / n).is_file() for n in report.PUBLISHED)
    assert (target / "table4_strata.md").is_file() and not (target / "fig3_stn_numbers.csv").exists()
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{report.README_END}\nafter\n")
    assert "old numbers" not in text and "| baseline | 26.7 [25.0, 28.4] |" in text
    assert "| +guidance | helps |" in text and "seeds [0, 1, 2]" in text and "`abcdef1234`" in text
    assert "baseline 15 min, +adaptive 30 min" in text and "Provenance:" not in text
    assert ("The whole `arkpose ablate --preset quick` took 25.0 min with 2 thread(s) on a machine "
            "whose fp32 ceiling measured 80.1 G MAC/s before it and 79.0 after") in text
    assert "(files: `docs/results/table4-quick/`)" in text
    assert "trained at commit(s) `1234567890`, `fedcba9876` (dirty), summarised at `abcdef1234`" in text
    report.publish(rep, readme, tmp_path / "docs" / "results")
    assert readme.read_text() == text  # idempotent
    assert "AMD EPYC, 2 thread(s), 2026-12-07" in text and "each worker's own" not in text
    (rep / "provenance.json").write_text(json.dumps({**prov, "train_threads": ["1"],
                                                     "launcher": {"launcher": "pool", "jobs": 2}}))
    report.publish(rep, readme, tmp_path / "docs" / "results")
    pooled = readme.read_text()
    assert ("AMD EPYC, 2 thread(s) in the driver, the (row, seed) jobs in 2 worker processes of 1 "
            "thread(s), 2026-12-07") in pooled and "(training + evaluation + scorer, each worker's own)" in pooled
    assert "took 25.0 min with the workers above on a machine" in pooled
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="results:begin"):
        report.publish(rep, readme, tmp_path / "docs" / "results")
    (rep / "per_seed.csv").unlink()
    with pytest.raises(FileNotFoundError, match="per_seed.csv"):
        report.publish(rep, readme, tmp_path / "docs" / "results")
