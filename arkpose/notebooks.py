"""The report notebooks: where they find the project, and how `arkpose ablate` runs them.

A notebook's path parameters are relative to the project root (the folder holding
``ablations/`` and ``notebooks/``), whichever folder its kernel starts in: papermill runs it
from the root, Jupyter Lab starts kernels in ``notebooks/``. :func:`project_path` makes the
same default parameters work from both.

Notebooks execute into hidden ``.<name>.partial`` files renamed into the report folder when
complete, so a notebook that fails or is killed never stands in a report as if it had run.
Kernels talk to papermill over a Unix socket in a private temp folder: the default TCP
transport makes ipykernel print a "without encryption" warning on every run.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from arkpose import ablate, presets, runtime

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _is_project(folder: Path) -> bool:
    return (folder / "ablations").is_dir() and (folder / "notebooks").is_dir()


def project_root(start: str | Path | None = None) -> Path:
    """The nearest of ``start`` (default: the working directory) and its parents that holds
    ``ablations/`` and ``notebooks/``; else the repository arkpose is installed from (an
    editable install); else ``start`` itself."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if _is_project(folder):
            return folder
    return NOTEBOOKS.parent if _is_project(NOTEBOOKS.parent) else start


def project_path(path: str | Path, start: str | Path | None = None) -> Path:
    """``path`` itself when absolute, else under :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root(start) / path


def _kernel_manager(folder: str) -> type:
    # lazy: the notebooks extra (optional); papermill and nbconvert take ~2 s
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(Path(folder) / "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


def execute_notebook(source: Path, target: Path, parameters: dict[str, Any],
                     cwd: str | Path | None = None) -> Path:
    """Run ``source`` with papermill into ``target`` (.ipynb) and export it as HTML next to it
    (both through hidden partial files, module doc). Parameters the notebook does not declare
    are dropped; the kernel starts in ``cwd`` (default: the working directory). The partial notebook of a failed run stays, hidden, to show where it stopped."""
    # lazy: the notebooks extra (optional), ~2 s to import
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    declared = papermill.inspect_notebook(str(source))
    with tempfile.TemporaryDirectory(prefix="arkpose-kernel-") as sockets:
        papermill.execute_notebook(
            str(source), str(partial), kernel_name="python3",
            parameters={k: v for k, v in parameters.items() if k in declared},
            progress_bar=False, cwd=str(cwd or Path.cwd()), kernel_manager_class=_kernel_manager(sockets),
        )
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(str(partial), as_version=4))
    partial_html = partial.with_suffix(".html")
    partial_html.write_text(html)
    partial.replace(target)
    partial_html.replace(target.with_suffix(".html"))
    return target


def report_notebooks(definition: ablate.Ablation, preset: str, seeds: tuple[int, ...],
                     overrides: list[str], run_root: Path, report_dir: Path,
                     analysis: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """``(notebook file name, parameters)`` of an ablation's report, in order: Table 4, the
    error analysis (Fig. 4) when analysed, the adaptive units (Fig. 3) when a trained row has
    them (its last such row, first seed), and the explorer (the last trained row)."""
    base = presets.preset(preset)
    params: dict[str, Any] = {
        "run_root": str(run_root.resolve()), "report_dir": str(report_dir.resolve()),
        "paper_csv": str(NOTEBOOKS.parent / "ablations" / "paper_numbers.csv"),
        "analysis": analysis, "seed": seeds[0],
    }
    trained = [r for r in definition.rows if r.reuse is None]
    out = [("table4.ipynb", params)]
    if analysis:
        out.append(("error_analysis.ipynb", params))
    adaptive = [r.name for r in trained if ablate.row_config(base, r, overrides).model.adaptive]
    if adaptive:
        out.append(("stn_sampling.ipynb", {**params, "row": adaptive[-1]}))
    out.append(("explore.ipynb", {**params, "row": trained[-1].name}))
    return out


def _execute_in_worker(source: Path, target: Path, params: dict[str, Any]) -> Path:
    try:
        return execute_notebook(source, target, params)
    except Exception as err:  # noqa: BLE001 - papermill's errors do not survive pickling to the driver
        raise NotebookFailed(f"{source.name}: {type(err).__name__}: {err}") from None


class NotebookFailed(RuntimeError):
    """A report notebook raised in a worker process; the message names it and the error."""


def run_report_notebooks(notebooks: list[tuple[str, dict[str, Any]]], report_dir: Path,
                         log=print, workers: int = 1, source: Path = NOTEBOOKS) -> list[Path]:
    """Execute each ``(name, parameters)`` of :func:`report_notebooks` from ``source``
    (``notebooks/``) into ``report_dir``; returns the executed notebooks, in the order given.

    ``workers`` > 1 runs that many notebooks at once, in spawned processes whose kernels get
    an even share of ``ARKPOSE_THREADS``: a notebook's kernel is mostly single-threaded
    (plotting, pandas), so on 2 cores two at once took 2/3 of the time of one after the other
(the laptop report: 42 s against 63).
    The last notebook of the list is started first (the list ends with the ones that load
    models). A failing notebook lets the others finish, then raises :class:`NotebookFailed`.
    """
    workers = min(workers, len(notebooks))
    if workers <= 1:
        done = []
        for name, params in notebooks:
            done.append(execute_notebook(source / name, report_dir / name, params))
            log(f"report: {done[-1].with_suffix('.html')}")
        return done
    threads = max(1, runtime.num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=runtime.use_threads,  # kernels inherit it
                             initargs=(threads,)) as pool:
        futures = {name: pool.submit(_execute_in_worker, source / name, report_dir / name, params)
                   for name, params in reversed(notebooks)}
        wait(futures.values())
    for name, _ in notebooks:  # the first failure in list order
        if futures[name].exception() is not None:
            raise futures[name].exception()
    done = [futures[name].result() for name, _ in notebooks]
    for path in done:
        log(f"report: {path.with_suffix('.html')}")
    return done
