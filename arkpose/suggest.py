""""Did you mean": the valid names nearest to a mistyped one, for one-line error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` closest to ``word``, best first.

    Dotted keys also match on their last part, so ``lr`` finds ``optim.lr``, ``batch``
    finds ``optim.batch_size`` and ``model.adaptiv`` finds ``model.adaptive``.
    """
    choices = list(choices)
    leaf = word.rsplit(".", 1)[-1].lower()
    by_leaf: dict[str, list[str]] = {}
    for key in choices:
        by_leaf.setdefault(key.rsplit(".", 1)[-1].lower(), []).append(key)
    close = difflib.get_close_matches
    # Closest kinds of match first: the same field name, a near key, a near field name,
    # a field name containing the word, then a looser near key.
    tiers = [
        by_leaf.get(leaf, []),
        close(word, choices, n=n, cutoff=0.8),
        [k for name in close(leaf, list(by_leaf), n=n, cutoff=0.7) for k in by_leaf[name]],
        [k for name, keys in by_leaf.items() if len(leaf) >= 3 and leaf in name for k in keys],
        close(word, choices, n=n, cutoff=0.6),
    ]
    found: list[str] = []
    for tier in tiers:
        found += [k for k in tier if k not in found]
    return found[:n]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean optim.lr?"`` / ``"did you mean a, b or c?"``, or ``""`` when nothing is near."""
    found = nearest(word, choices)
    if not found:
        return ""
    listed = found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}"
    return f"did you mean {listed}?"
