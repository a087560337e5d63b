"""Does our figure show the paper's finding? Measured verdicts, one function per figure group.

Each function takes result objects (:class:`~vitlens.SimilarityResult` and the results of
:mod:`vitlens.analyses`) and returns :class:`Finding` rows: the paper's claim in plain words,
a statistic chosen before any result was seen, its value, the fixed rule it is compared with
and the verdict. Nothing is asserted without being measured; the thresholds are module
constants, documented in each module and in ``docs/FINDINGS.md``.

>>> rows = vitlens.findings.representation_structure(vit_within, resnet_within, cross)
>>> vitlens.findings.findings_table(rows)        # a pandas DataFrame
>>> print(vitlens.findings.to_markdown(rows))    # a Markdown table

The functions, in the order of the notebooks:

- :func:`representation_structure` (Fig 1, 2, B.1; notebook 01)
- :func:`attention_distance` (Fig 3, 4, 5, C.5; notebook 02)
- :func:`receptive_fields` (Fig 6, C.1-C.4; notebook 03)
- :func:`skip_connections` (Fig 7, 8, E.1, E.2; notebook 04)
- :func:`localization` (Fig 9, 10, D.1-D.3; notebook 05)
- :func:`linear_probes` (Fig 11, 13, D.4; notebook 06)
- :func:`data_scale_and_finetuning` (Fig 12, App. G; notebook 07)
- :func:`mixer` (App. H; notebook 08)
"""

from __future__ import annotations

from ._core import COLUMNS, Finding, findings_table, fmt, spearman, to_markdown
from .attention import attention_distance
from .localization import localization
from .probes import linear_probes
from .receptive_field import receptive_fields
from .representation import mixer, representation_structure
from .scale import data_scale_and_finetuning
from .skip import skip_connections

__all__ = [
    "COLUMNS",
    "Finding",
    "attention_distance",
    "data_scale_and_finetuning",
    "findings_table",
    "fmt",
    "linear_probes",
    "localization",
    "mixer",
    "receptive_fields",
    "report",
    "representation_structure",
    "skip_connections",
    "spearman",
    "to_markdown",
]


def report(rows: list[Finding]):
    """Print one line per finding (verdict and the numbers behind it); return the table."""
    for row in rows:
        print(row)
    return findings_table(rows)
