import json
from pathlib import Path

import pandas as pd
import pytest

from arkpose import ablate, config

REPO = Path(__file__).resolve().parents[1]


def test_table4_definition_matches_the_paper_rows():
    definition = ablate.load_ablation(REPO / "ablations" / "table4.yaml")
    assert [r.name for r in definition.rows] == [
        "baseline", "+guidance", "+tradeoff", "+adaptive", "+scoring"
    ]
    base = config.preset("quick")
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
        ablate.load_ablation(_write(tmp_path, text))


def test_missing_definition(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        ablate.load_ablation(tmp_path / "nope.yaml")


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
    cfg = config.preset("smoke")
    cfg.data.root = str(root)
    with pytest.raises(synth.SynthError, match=rf"other arguments.*--out {root} --preset smoke --force"):
        ablate.ensure_data(cfg, progress=False)


def test_user_overrides_apply_after_the_row():
    row = ablate.Row("r", {"model.adaptive": False, "optim.epochs": 3})
    cfg = ablate.row_config(config.preset("smoke"), row, ["optim.epochs=1"])
    assert cfg.model.adaptive is False and cfg.optim.epochs == 1 and cfg.name == "r"


def test_compare_with_paper_and_markdown(tmp_path):
    rows = [
        {"row": "baseline", "paper_method": "baseline",
         "regression_AP": 0.5, "heatmap_AP": 0.6, "final_AP": 0.55},
        {"row": "+guidance", "paper_method": "+guidance",
         "regression_AP": 0.52, "heatmap_AP": 0.61, "final_AP": 0.57},
        {"row": "extra", "paper_method": "not-in-paper",
         "regression_AP": 0.1, "heatmap_AP": 0.2, "final_AP": 0.3},
    ]
    (tmp_path / "summary.json").write_text(json.dumps({"rows": rows, "paper_table": "T4"}))
    table = ablate.compare_with_paper(tmp_path, REPO / "ablations" / "paper_numbers.csv")
    assert table.loc["baseline", "regression (ours)"] == pytest.approx(50.0)
    assert table.loc["baseline", "regression (paper)"] == pytest.approx(59.6)
    assert table.loc["+guidance", "final (paper)"] == pytest.approx(64.9)
    assert pd.isna(table.loc["extra", "heatmap (paper)"])
    md = ablate.to_markdown(table[["final (ours)", "final (paper)"]])
    assert md.splitlines()[0] == "| row | final (ours) | final (paper) |"
    assert md.splitlines()[2] == "| baseline | 55.0 | 64.5 |"
    assert md.splitlines()[4] == "| extra | 30.0 | – |"


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
