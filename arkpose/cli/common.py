"""What the checkpoint-reading commands (``eval``, ``predict``) share: loading the model and
the optional learned scorer, with failures turned into one line for the user."""

from __future__ import annotations

from typing import Any


class CommandError(Exception):
    """A failure the command prints as ``arkpose <command>: <message>`` (exit status 1)."""


def load_checkpoint(checkpoint: str, device: str) -> tuple[Any, Any]:
    """Configure threads and load ``checkpoint`` on ``device`` -> ``(model, cfg)``."""
    from arkpose import runtime
    from arkpose.checkpoint import CheckpointError, load_model

    runtime.configure_threads()
    try:
        return load_model(checkpoint, device=runtime.resolve_device(device))
    except (CheckpointError, FileNotFoundError) as err:
        raise CommandError(str(err)) from None


def load_scorer(path: str | None, spec: Any, mode: str) -> Any:
    """The learned scoring function of ``path`` (None when no scorer was given)."""
    if path is None:
        return None
    from arkpose import rescore

    try:
        return rescore.load_score_fn(path, spec, mode)
    except (OSError, ValueError, RuntimeError) as err:
        raise CommandError(f"cannot use scorer {path}: {err}") from None
