"""The run folder: file names, ``train.log`` (and the console above the progress bar),
``metrics.jsonl`` (append, read, truncate on resume) and ``config.yaml``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from arkpose import config as config_lib
from arkpose.config import Config

LOG = logging.getLogger("arkpose.train")

LAST, BEST = "last.pt", "best.pt"
METRICS, LOG_FILE, CONFIG_FILE = "metrics.jsonl", "train.log", "config.yaml"


def _setup_logging(out_dir: Path, is_main: bool) -> list[logging.Handler]:
    if not is_main:
        return []

    class TqdmHandler(logging.Handler):  # print above the progress bar, not through it
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    file_handler = logging.FileHandler(out_dir / LOG_FILE)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [file_handler, console]
    for h in handlers:
        LOG.addHandler(h)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    return handlers


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (one per finished epoch)."""
    path = Path(out_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(out_dir: Path, epochs_done: int) -> None:
    """Drop records of epochs past the checkpoint (written before a crash, redone now)."""
    records = [r for r in read_metrics(out_dir) if r.get("epoch", 0) <= epochs_done]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (out_dir / METRICS).write_text(text)


def _format_record(r: dict) -> str:
    text = (
        f"epoch {r['epoch']}: loss {r['loss']:.6f} (heatmap {r['heatmap']:.6f}, offset "
        f"{r['offset']:.4f}) lr {r['lr']:.1e} {r['images_per_s']:.1f} img/s "
        f"data wait {100 * r['data_wait']:.0f}%"
    )
    if "val_AP" in r:
        text += f" val_AP {r['val_AP']:.4f}"
    return text



def _append_metrics(out_dir: Path, record: dict) -> None:
    """Add one epoch's record to ``metrics.jsonl`` and log its summary line."""
    with open(out_dir / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
    LOG.info(_format_record(record))


def _save_config(cfg: Config, out_dir: Path) -> None:
    config_lib.save_yaml(cfg, out_dir / CONFIG_FILE)
