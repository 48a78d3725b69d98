"""Progress bars that are drawn on a terminal and stay silent everywhere else.

A notebook kernel, a log file or CI is not a terminal: there a bar is dozens of carriage-
return fragments in a red stderr block (and ``tqdm.auto`` adds "IProgress not found"), so
bars are drawn only when their stream is a TTY (tqdm's ``disable=None``). torch-free, so
``arkpose synth`` can use it.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``); ``enabled=False``
    silences it even on a terminal."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
