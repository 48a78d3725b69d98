"""``python -m arkpose.train`` and ``torchrun --nproc_per_node=N -m arkpose.train``."""

import sys

from arkpose.train.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m arkpose.train"))
