"""Json files. Output is atomic: results are written to a sibling ``.tmp`` file and renamed
into place, so an interrupted run never leaves a half-written file that a resumed run would
trust. Input fails in one line naming the file and what is wrong with it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to, renamed onto ``path`` when the block ends
    without an error and removed otherwise (parents created). It keeps the suffix, so writers
    that pick the format from the name (matplotlib, PIL) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` to ``path`` atomically (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, **dumps_kwargs))
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike, what: str, error: type[Exception]) -> Any:
    """The parsed json of ``path``; ``what`` names the file in messages ("detections file").

    A missing path raises ``FileNotFoundError``; a folder, an empty, truncated or non-json
    file raises ``error`` (the caller's own error type) with one line saying which.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder; pass the json file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = path.read_bytes()
    if not data.strip():
        raise error(f"{what} {path} is empty ({len(data)} bytes); write it again or pass "
                    "another file")
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        cut = err.pos >= len(data.rstrip()) or err.msg.startswith("Unterminated")
        why = "it ends in the middle (cut off?)" if cut else err.msg
        raise error(f"{what} {path} is not valid json: {why} (line {err.lineno}, column "
                    f"{err.colno}); write it again or pass a complete file") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not text (not a json file); pass the json file") from None
