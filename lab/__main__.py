"""Entry point for ``python3 -m lab VERB``; the verbs live in :mod:`lab.cli`."""

import sys

from lab.cli import main

sys.exit(main())
