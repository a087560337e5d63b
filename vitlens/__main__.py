"""``python -m vitlens`` (and ``torchrun -m vitlens``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
