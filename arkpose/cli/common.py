"""What the commands share: the exit statuses, one-line error reports, the ``--set`` option,
and loading a checkpoint and the optional learned scorer with failures turned into one line.

Every bad input or usage (a file that is missing, empty or of the wrong kind, a config value
out of range, an unknown key) ends in one line on stderr, ``arkpose <command>: <message>``,
naming the input, the problem and the fix, with exit status 2, argparse's own; status 1 is
left for failures while running.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from arkpose.config import Config, ConfigError

if TYPE_CHECKING:  # torch: `arkpose synth` and every --help import this module
    from arkpose.decode import ScoreFn
    from arkpose.model import PoseNet
    from arkpose.spec import KeypointSpec

EXIT_FAILURE = 1  # a failure while running
EXIT_USAGE = 2  # bad input or usage (argparse exits with 2 too)


class CommandError(Exception):
    """A failure the command prints as ``arkpose <command>: <message>``; ``status`` 2 (bad
    input or usage, the default) or 1 (a failure while running)."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    """``text`` on one line: its non-empty lines joined by "; "."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def report(prog: str, message: Any, status: int = EXIT_USAGE) -> int:
    """Print ``prog: message`` as one line on stderr; returns ``status``."""
    print(f"{prog}: {one_line(str(message))}", file=sys.stderr)
    return status


def guarded(prog: str, body: Callable[[], int], bad_input: tuple[type[Exception], ...]) -> int:
    """``body()``, with a :class:`CommandError` or one of the ``bad_input`` error types
    (arkpose's own, which name their fix) reported as one line instead of a traceback."""
    try:
        return body()
    except CommandError as err:
        return report(prog, err, err.status)
    except bad_input as err:
        return report(prog, err, EXIT_USAGE)


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``, repeatable: the one syntax of every command."""
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+",
                        action="extend", default=[], help=help)


def load_checkpoint(
    checkpoint: str, device: str, overrides: list[str] = ()
) -> tuple[PoseNet, Config]:
    """Configure threads and load ``checkpoint`` on ``device`` -> ``(model, cfg)``, with the
    ``--set data.*`` ``overrides`` applied to the config."""
    # lazy: torch (~1.3 s); `arkpose synth` and every --help import this module
    from arkpose import runtime
    from arkpose.checkpoint import CheckpointError, load_model
    from arkpose.config_check import apply_data_overrides

    runtime.configure_threads()
    try:
        model, cfg = load_model(checkpoint, device=runtime.resolve_device(device))
        apply_data_overrides(cfg, list(overrides), cfg.data.spec.num_keypoints)
    except (CheckpointError, FileNotFoundError, ConfigError) as err:
        raise CommandError(str(err)) from None
    except RuntimeError as err:  # resolve_device: CUDA asked for but absent
        raise CommandError(f"--device {device}: {err}") from None
    return model, cfg


def with_decode_flags(cfg: Config, flip: bool | None, scales: tuple[float, ...] | None) -> None:
    """``--flip/--no-flip`` and ``--scales`` (None: as configured) into ``cfg.eval.decode``."""
    given = {k: v for k, v in (("flip", flip), ("scales", scales)) if v is not None}
    cfg.eval.decode = dataclasses.replace(cfg.eval.decode, **given)


def load_scorer(path: str | None, spec: KeypointSpec, mode: str) -> ScoreFn | None:
    """The learned scoring function of ``path`` (None when no scorer was given)."""
    if path is None:
        return None
    from arkpose import rescore  # lazy: torch (~1.3 s), as load_checkpoint

    try:
        return rescore.load_score_fn(path, spec, mode)
    except (OSError, ValueError, RuntimeError) as err:
        raise CommandError(f"cannot use scorer {path}: {err}") from None
