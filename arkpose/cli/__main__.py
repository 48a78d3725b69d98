"""``python -m arkpose.cli <command>``: the same as the ``arkpose`` entry point."""

import sys

from arkpose.cli import main

sys.exit(main())
