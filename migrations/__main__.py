"""Entry point for ``python -m migrations``; see ``python -m migrations --help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
