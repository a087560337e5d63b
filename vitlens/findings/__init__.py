"""Does our figure show the paper's finding? Measured verdicts, one function per figure group.

Each function takes result objects (:class:`~vitlens.SimilarityResult` and the results of
:mod:`vitlens.analyses`) and returns :class:`Finding` rows: the paper's claim in plain words,
a statistic chosen before any result was seen, its value, the fixed rule it is compared with,
the same statistic on seeded random-init copies of the same architectures (the control,
:mod:`vitlens.findings.controls`), the margin between them, and the verdict: "reproduced" only
when the trained models pass the rule and beat every control by more than the controls'
spread; "inconclusive" when a control passes too. Nothing is asserted without being measured; the thresholds are module
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

from ._core import (
    COLUMNS,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    UNCONTROLLED,
    Finding,
    findings_table,
    fmt,
    spearman,
    to_markdown,
    with_controls,
)
from .attention import attention_distance
from .controls import CONTROL_SEEDS, control_models, random_init
from .localization import localization
from .probes import linear_probes
from .receptive_field import receptive_fields
from .representation import mixer, representation_structure
from .scale import data_scale_and_finetuning
from .skip import skip_connections

__all__ = [
    "COLUMNS",
    "CONTROL_SEEDS",
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "UNCONTROLLED",
    "Finding",
    "FindingsTable",
    "attention_distance",
    "control_models",
    "data_scale_and_finetuning",
    "findings_table",
    "fmt",
    "linear_probes",
    "localization",
    "mixer",
    "random_init",
    "receptive_fields",
    "report",
    "representation_structure",
    "skip_connections",
    "spearman",
    "to_markdown",
    "with_controls",
]


class FindingsTable:
    """A findings table for notebooks: full-width HTML, and Markdown as plain text.

    Attributes:
        rows: The :class:`Finding` rows.
        df: The same as :func:`findings_table` (a pandas DataFrame).
    """

    def __init__(self, rows: list[Finding]) -> None:
        self.rows = list(rows)
        self.df = findings_table(self.rows)

    def __repr__(self) -> str:
        return to_markdown(self.rows)

    def _repr_html_(self) -> str:
        import pandas as pd

        with pd.option_context("display.max_colwidth", None):
            return self.df.to_html(index=False, na_rep="nan", float_format=lambda v: f"{v:.3f}")


def report(rows: list[Finding]) -> FindingsTable:
    """The findings table (shown once: HTML in a notebook, Markdown as text); ``str(row)``
    gives one row as a sentence."""
    return FindingsTable(rows)
