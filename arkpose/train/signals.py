"""Stopping a run: SIGINT / SIGTERM handling and the exit statuses of ``arkpose train``.

The loop polls :class:`_StopFlag` after every step; on a signal it saves ``last.pt`` and
raises :class:`TrainingInterrupted`, which :func:`arkpose.train.main` turns into 130 / 143.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

LOG = logging.getLogger("arkpose.train")

# Exit statuses of `arkpose train` (shell conventions for SIGINT / SIGTERM).
EXIT_ERROR, EXIT_SIGINT, EXIT_SIGTERM = 1, 130, 143
EXIT_BAD_INPUT = 2  # config, data or checkpoint unusable: nothing was run (argparse's status)

class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped training after ``last.pt`` was saved."""

    def __init__(self, signum: int, path: Path):
        self.signum, self.path = signum, path
        name = signal.Signals(signum).name
        super().__init__(
            f"training stopped by {name}; state saved to {path}. "
            f"Continue with the same command plus --resume"
        )

    def __reduce__(self):  # pool workers send it to the driver (arkpose.pool)
        return type(self), (self.signum, self.path)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: Ctrl-C / SIGTERM reach the whole process group, but only the
    main process should react (finish the step, save, exit); a worker that died of them
    would turn the clean stop into a 'worker exited unexpectedly' error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StopFlag:
    """Set by SIGINT / SIGTERM; the loop saves ``last.pt`` at the next step and stops.
    A second Ctrl-C aborts at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        LOG.warning(
            "%s received: saving last.pt after this step (Ctrl-C again aborts without saving)",
            signal.Signals(signum).name,
        )

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
