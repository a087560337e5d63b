"""Old home of :mod:`vitlens.similarity.run` (this name is that module, for old imports)."""

import sys

from .similarity import run as _run

sys.modules[__name__] = _run
