"""The ``arkpose`` command: ``arkpose <command> [options]``.

Each command lives in its own module under ``arkpose/cli/`` with a ``main(argv) -> int``;
it is imported only when called, so ``arkpose --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

from arkpose import __version__
from arkpose.suggest import did_you_mean

COMMANDS = {
    "synth": "generate the SynthPose benchmark",
    "train": "train a pose model from a preset",
    "eval": "evaluate a checkpoint (regression / heatmap / final quality)",
    "predict": "run a checkpoint on images, write json and drawings",
    "rescore": "train the learned pose-scoring net for a checkpoint",
    "analyze": "Ronchi-Perona error analysis of a detections json",
    "ablate": "run the Table 4 ablation rows end to end",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return (f"usage: arkpose <command> [options] | arkpose --version\n\ncommands:\n{rows}\n\n"
            "'arkpose <command> --help' for a command's options")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"arkpose {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        hint = did_you_mean(command, COMMANDS) or f"the commands are {', '.join(COMMANDS)}"
        print(f"arkpose: unknown command {command!r}; {hint} ('arkpose --help' lists them)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"arkpose.cli.{command}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
