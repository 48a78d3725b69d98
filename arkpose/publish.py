"""``make results``: a Table 4 report's tables and provenance copied to docs/results (kept in
git, unlike reports/) and quoted in the README between the results markers, so the README
shows run files rather than typed numbers. The report itself is :mod:`arkpose.ablation_report`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

README_BEGIN = "<!-- results:begin (written by `make results`; edit nothing inside) -->"
README_END = "<!-- results:end -->"
PUBLISHED = ("table4.md", "table4_deltas.md", "table4.csv", "table4_deltas.csv", "per_seed.csv",
             "provenance.json")
# Copied too when the report has them (the strata and Fig. 3 numbers of SynthPose runs).
OPTIONAL = ("table4_strata.md", "table4_strata.csv", "fig3_stn_numbers.csv", "wall.json")


def publish(report_dir: str | Path, readme: str | Path, dest: str | Path) -> Path:
    """Copy a report's tables and provenance to ``dest/<report name>/`` (kept in git, unlike
    reports/) and put its two tables in ``readme`` between the results markers, so the README
    quotes run files rather than typed numbers."""
    report_dir, readme = Path(report_dir), Path(readme)
    missing = [n for n in PUBLISHED if not (report_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{report_dir} lacks {', '.join(missing)}: run `arkpose ablate` "
                                "(with its notebooks) first")
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme} needs one {README_BEGIN!r} and one {README_END!r} line")
    target = Path(dest) / report_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED + tuple(n for n in OPTIONAL if (report_dir / n).is_file()):
        shutil.copyfile(report_dir / name, target / name)
    prov = json.loads((report_dir / "provenance.json").read_text())
    rel = Path(os.path.relpath(target, readme.parent)).as_posix()
    block = "\n".join([
        README_BEGIN,
        f"Preset `{prov['preset']}`, seeds {prov['seeds']}, trained at commit(s) "
        + ", ".join(f"`{c[:10]}`{c[40:]}" for c in prov.get("train_commits", []))
        + f", summarised at `{str(prov['git_commit'])[:10]}`"
        f"{' (dirty tree)' if prov.get('git_dirty') else ''}, {prov['device']}, {_threads(prov)}, "
        f"{prov['date'][:10]}; AP x 100, mean over seeds [95% CI] (files: `{rel}/`). "
        "Wall time per row, all seeds (training + evaluation + scorer"
        + (", each worker's own" if _pooled(prov) else "") + "): "
        + ", ".join(f"{row} {seconds / 60:.0f} min" for row, seconds in prov["wall_s_per_row"].items())
        + "."
        + _wall_sentence(report_dir / "wall.json", _pooled(prov)),
        "",
        (report_dir / "table4.md").read_text().split("\nProvenance:")[0].strip(),
        "",
        "Each component against the row above (Δ [95% CI], P(Δ > 0), verdict; the paper's Δ on COCO):",
        "",
        (report_dir / "table4_deltas.md").read_text().split("\nProvenance:")[0].strip(),
        README_END,
    ])
    head, rest = text.split(README_BEGIN)
    _, tail = rest.split(README_END)
    readme.write_text(head + block + tail)
    return target


def _pooled(prov: dict) -> bool:
    return prov.get("launcher", {}).get("launcher") == "pool"


def _threads(prov: dict) -> str:
    """How many threads ran it: the driver's, and the pool workers' (arkpose.pool)."""
    if not _pooled(prov):
        return f"{prov['threads']} thread(s)"
    each = " or ".join(prov.get("train_threads", ["?"]))
    return (f"{prov['threads']} thread(s) in the driver, the (row, seed) jobs in "
            f"{prov['launcher']['jobs']} worker processes of {each} thread(s)")


def _wall_sentence(path: Path, pooled: bool) -> str:
    if not path.is_file():
        return ""
    wall = json.loads(path.read_text())
    ceiling = wall["fp32_ceiling_gmac_s"]
    threads = "the workers above" if pooled else f"{wall['threads']} thread(s)"
    return (f" The whole `{wall['command']}` took {wall['wall_s'] / 60:.1f} min with "
            f"{threads} on a machine whose fp32 ceiling measured "
            f"{ceiling['start']} G MAC/s before it and {ceiling['end']} after (`wall.json`).")


if __name__ == "__main__":  # `make results`: python -m arkpose.publish REPORT_DIR
    repo = Path(__file__).resolve().parents[1]
    for folder in sys.argv[1:] or [str(repo / "reports" / "table4-laptop")]:
        print(publish(folder, repo / "README.md", repo / "docs" / "results"))
