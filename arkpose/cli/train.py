"""``arkpose train``: train a pose model from a preset (see docs/training.md).

The parser and the loop live in :mod:`arkpose.train`, so ``python -m arkpose.train`` and
``torchrun --nproc_per_node=N -m arkpose.train`` take exactly these arguments.
"""

from __future__ import annotations

from arkpose.train import main as _train_main


def main(argv: list[str]) -> int:
    return _train_main(argv, prog="arkpose train")
