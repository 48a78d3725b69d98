"""An ablation definition (``ablations/table4.yaml``): its rows, each a set of config
overrides on a preset or a reuse of another row's checkpoint, read and checked before anything
runs (docs/ablations.md); and the ``--seeds`` every row runs with."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arkpose import config as config_lib


class AblationError(ValueError):
    """A malformed ablation definition."""


@dataclass(frozen=True)
class Row:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    reuse: str | None = None  # evaluate this row's checkpoint instead of training
    learned_scoring: bool = False
    paper_method: str | None = None  # the row's name in paper_numbers.csv

    @property
    def paper_name(self) -> str:
        """The row's method in paper_numbers.csv (its own name unless ``paper_method``)."""
        return self.paper_method or self.name

    @property
    def slug(self) -> str:
        """Directory-safe name: ``+guidance`` -> ``plus-guidance``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name.replace("+", "plus-")).strip("-")


@dataclass(frozen=True)
class Ablation:
    name: str
    rows: tuple[Row, ...]
    description: str = ""
    paper_table: str | None = None


def load_ablation(path: str | Path) -> Ablation:
    """Read and validate an ablation yaml (every override key is checked against Config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation definition {path} does not exist (see ablations/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AblationError(f"{path}: not valid yaml: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise AblationError(f"{path}: needs a top-level mapping with a non-empty 'rows' list")
    known = {"name", "set", "reuse", "learned_scoring", "paper_method"}
    rows = []
    for i, raw in enumerate(data["rows"]):
        if not isinstance(raw, dict) or "name" not in raw:
            raise AblationError(f"{path}: row {i} needs a 'name'")
        unknown = set(raw) - known
        if unknown:
            raise AblationError(
                f"{path}: row {raw['name']!r} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(known)}"
            )
        overrides = dict(raw.get("set") or {})
        try:
            config_lib.apply_overrides(config_lib.Config(), overrides)
        except config_lib.ConfigError as err:
            raise AblationError(f"{path}: row {raw['name']!r}: {err}") from None
        rows.append(
            Row(
                name=str(raw["name"]),
                overrides=overrides,
                reuse=raw.get("reuse"),
                learned_scoring=bool(raw.get("learned_scoring", False)),
                paper_method=raw.get("paper_method"),
            )
        )
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise AblationError(f"{path}: row names must be unique, got {names}")
    trained = {r.name for r in rows if r.reuse is None}
    for r in rows:
        if r.reuse is not None and r.reuse not in trained:
            raise AblationError(
                f"{path}: row {r.name!r} reuses {r.reuse!r}, which is not a trained row "
                f"({sorted(trained)})"
            )
    return Ablation(
        name=str(data.get("name", path.stem)),
        rows=tuple(rows),
        description=str(data.get("description", "")).strip(),
        paper_table=data.get("paper_table"),
    )


def row_config(base: config_lib.Config, row: Row, extra: list[str] | None = None) -> config_lib.Config:
    """The preset ``base`` with the row's overrides, then the user's ``extra`` overrides."""
    cfg = config_lib.clone(base)
    cfg.name = row.name
    config_lib.apply_overrides(cfg, row.overrides)
    if row.learned_scoring:  # the row-level key is the same switch as eval.learned_scoring
        cfg.eval.learned_scoring = True
    config_lib.apply_overrides(cfg, extra or [])
    return cfg


def parse_seeds(text: str | None, default_count: int) -> tuple[int, ...]:
    """``--seeds``: ``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those; ``"5,"`` -> seed 5 alone;
    None -> the preset's ``ablation_seeds`` first seeds."""
    fix = "use --seeds N (the first N seeds) or a list such as --seeds 0,1,2"
    if text is None:
        return tuple(range(default_count))
    raw = str(text).strip()
    parts = [p.strip() for p in raw.split(",")]
    try:
        if "," not in raw:
            count = int(raw)
            if count < 1:
                raise AblationError(f"--seeds {raw}: at least one seed is needed; {fix}")
            return tuple(range(count))
        seeds = tuple(int(p) for p in parts if p)
    except ValueError:
        raise AblationError(f"--seeds {raw!r} is not a list of non-negative integers; {fix}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise AblationError(f"--seeds {raw!r} is not a list of non-negative integers; {fix}")
    if len(set(seeds)) != len(seeds):
        raise AblationError(f"--seeds {raw!r} repeats a seed; {fix}")
    return seeds
