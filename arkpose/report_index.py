"""Landing pages of the reports: ``reports/<run>/index.html`` (one ablation run: Table 4 with
its intervals, the figures, the executed notebooks, the provenance) and ``reports/index.html``
(every run). Static HTML with relative links, so it opens from the file system without a
server. The pages only read what the notebooks wrote; a figure or notebook that a run did
not produce is left out, never linked, and so is a file older than the report's
``provenance.json`` (which the Table 4 notebook copies first): a leftover of an earlier run,
e.g. a figure the current notebooks no longer draw, never stands in a newer report.

``python -m arkpose.report_index [REPORTS]`` rewrites them all (default: ``reports/``).
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pandas as pd

from arkpose import ablation_report
from arkpose.jsonio import atomic_path

INDEX = "index.html"
# (section title, what it shows, file name patterns): PNGs, drawn in this order.
FIGURES = (
    ("Each component's ΔAP", ("Blue: our mean Δ over seeds with its 95% CI; red: the paper's Δ "
     "on COCO. A bar crossing 0 cannot be told from noise."), ("table4_forest.png",)),
    ("Which component helps which persons", ("Each component's ΔAP with its 95% CI on both "
     "strata of a pair of validation persons (upright / rotated, small / large, isolated / "
     "overlapping; docs/ablations.md)."), ("table4_strata.png",)),
    ("Training curves", "Loss per step and validation AP per epoch, every row and seed.",
     ("training_curves.png",)),
    ("Figure 4: where the keypoints go wrong", ("Ronchi-Perona error types per row (mean over "
     "seeds; bars span the seeds)."), ("fig4_keypoints*.png", "fig4_isolated_ap_gain*.png",
                                      "fig4_pr_breakdown_*.png")),
    ("Figure 3: where the adaptive units look", ("Sampling positions of the adaptive unit at "
     "person centers, and its learned transform against the true geometry."),
     ("fig3_sampling_positions.png", "fig3_transform_vs_geometry.png", "fig3_stn_units.png")),
)
NOTEBOOK_TITLES = {
    "table4": "Table 4 with intervals", "error_analysis": "Figure 4: error analysis",
    "stn_sampling": "Figure 3: adaptive sampling positions", "explore": "Explorer",
}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}td,th{border:1px
solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%;
border:1px solid #eee;margin:0.3em 0}.note{color:#555}code{background:#f3f3f3;padding:0 3px}"""


def _page(title: str, body: list[str]) -> str:
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _link(href: str, text: str) -> str:
    return f"<a href='{html.escape(href)}'>{html.escape(text)}</a>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(escape=True, na_rep="–", border=0)


def _provenance(prov: dict) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"<code>{html.escape(json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))}"
        "</code></td></tr>" for k, v in prov.items())
    return f"<table>{rows}</table>"


STALE_SLACK_S = 5.0  # the run's own csv files are copied just before provenance.json


def run_page(report_dir: str | Path, since: float | None = None) -> Path:
    """Write ``report_dir/index.html`` from the files the report notebooks left there that are
    not older than ``since`` (a POSIX time; default: the report's provenance.json, less
    :data:`STALE_SLACK_S`)."""
    report_dir = Path(report_dir)
    prov_path = report_dir / "provenance.json"
    if not prov_path.is_file():
        raise FileNotFoundError(f"{prov_path} does not exist: run the report notebooks first "
                                "(`arkpose ablate`, without --no-notebooks)")
    prov = json.loads(prov_path.read_text())
    since = prov_path.stat().st_mtime - STALE_SLACK_S if since is None else since

    def fresh(pattern: str) -> list[Path]:
        return [p for p in sorted(report_dir.glob(pattern))
                if not p.name.startswith(".") and p.stat().st_mtime >= since]
    body = [(f"<p class='note'>Preset <code>{html.escape(str(prov.get('preset')))}</code>, seeds "
            f"{html.escape(str(prov.get('seeds')))}, ablation "
            f"<code>{html.escape(str(prov.get('ablation')))}</code>; AP x 100, mean over seeds "
            "[95% CI: seeds and validation images, paired bootstrap]. "
            f"{_link('../' + INDEX, 'all runs')}</p>")]
    if (report_dir / "table4.csv").is_file():
        rows = pd.read_csv(report_dir / "table4.csv", index_col="row")
        body += ["<h2>Table 4: the rows, ours beside the paper</h2>",
                 _table(ablation_report.rows_display(rows))]
    if (report_dir / "table4_deltas.csv").is_file():
        deltas = pd.read_csv(report_dir / "table4_deltas.csv")
        body += ["<h2>What each component changes (against the row above)</h2>",
                 _table(ablation_report.deltas_display(deltas))]
    for title, note, patterns in FIGURES:
        pngs = [p for pattern in patterns for p in fresh(pattern)]
        if not pngs:
            continue
        body += [f"<h2>{html.escape(title)}</h2>", f"<p class='note'>{html.escape(note)}</p>"]
        for png in pngs:
            svg = png.with_suffix(".svg")
            extra = f" ({_link(svg.name, 'SVG')})" if svg in fresh(svg.name) else ""
            body.append(f"<figure><img src='{html.escape(png.name)}' alt='{html.escape(png.stem)}'>"
                        f"<figcaption>{html.escape(png.name)}{extra}</figcaption></figure>")
    notebooks = fresh("*.ipynb")
    if notebooks:
        items = "".join(
            f"<li>{html.escape(NOTEBOOK_TITLES.get(nb.stem, nb.stem))}: "
            + (_link(nb.with_suffix(".html").name, "HTML") + ", "
               if nb.with_suffix(".html") in fresh(nb.with_suffix(".html").name) else "")
            + _link(nb.name, "notebook") + "</li>" for nb in notebooks)
        body += ["<h2>Executed notebooks</h2>", f"<ul>{items}</ul>"]
    data = [p.name for p in fresh("*.csv") + fresh("*.md")]
    if data:
        body += ["<h2>Data</h2>", "<p>" + ", ".join(_link(n, n) for n in data) + "</p>"]
    body += ["<h2>Provenance</h2>", _provenance(prov)]
    title = f"{prov.get('ablation', 'ablation')} / {prov.get('preset', report_dir.name)}"
    return _write(report_dir / INDEX, _page(f"arkpose report: {title}", body))


def root_page(reports: str | Path) -> Path:
    """Write ``reports/index.html``: one line per run folder that has an index page."""
    reports = Path(reports)
    lines = []
    for page in sorted(reports.glob(f"*/{INDEX}")):
        prov_path = page.parent / "provenance.json"
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        lines.append(
            f"<tr><td style='text-align:left'>{_link(page.parent.name + '/' + INDEX, page.parent.name)}"
            f"</td><td>{html.escape(str(prov.get('preset', '?')))}</td>"
            f"<td>{html.escape(str(prov.get('seeds', '?')))}</td>"
            f"<td>{html.escape(str(prov.get('date', '?'))[:16])}</td>"
            f"<td><code>{html.escape(str(prov.get('git_commit', '?'))[:10])}</code></td>"
            f"<td>{html.escape(str(prov.get('device', '?')))}</td></tr>")
    head = "<tr><th>run</th><th>preset</th><th>seeds</th><th>date</th><th>commit</th><th>device</th></tr>"
    body = ([f"<table>{head}{''.join(lines)}</table>"] if lines
            else ["<p>No reports yet: run <code>make ablations</code>.</p>"])
    return _write(reports / INDEX, _page("arkpose reports", body))


def write_all(reports: str | Path) -> list[Path]:
    """Every run page under ``reports`` (folders with a provenance.json), then the root page."""
    reports = Path(reports)
    pages = [run_page(p.parent) for p in sorted(reports.glob("*/provenance.json"))]
    return [*pages, root_page(reports)]


if __name__ == "__main__":
    for written in write_all(sys.argv[1] if len(sys.argv) > 1 else "reports"):
        print(written)
