"""The :class:`Finding` row, the findings table and the small statistics the verdicts use."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

COLUMNS = ("figure", "paper finding", "measured statistic", "value", "rule", "reproduced?", "note")


@dataclass(frozen=True)
class Finding:
    """One checked claim of the paper.

    Attributes:
        figure: The paper's figure(s), e.g. ``"Fig 1"``.
        paper_finding: The claim, in plain words.
        statistic: What was measured, chosen before looking at any result.
        value: The measured number (NaN when it could not be measured).
        rule: The fixed threshold the value is compared with, e.g. ``"> 0.05"``.
        reproduced: Whether ``value`` satisfies ``rule`` (never true for NaN).
        note: The numbers behind the value, and, when not reproduced, the likely reason.
    """

    figure: str
    paper_finding: str
    statistic: str
    value: float
    rule: str
    reproduced: bool
    note: str = ""

    @property
    def verdict(self) -> str:
        return "reproduced" if self.reproduced else "not reproduced"

    def __str__(self) -> str:
        text = f"{self.figure}: {self.verdict}. {self.statistic} = {fmt(self.value)} (rule: {self.rule})"
        return f"{text}; {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"] = None if not math.isfinite(self.value) else float(self.value)
        return d


def fmt(value: float, digits: int = 3) -> str:
    """A fixed-point number for tables (``nan`` stays ``nan``)."""
    if value is None or not math.isfinite(float(value)):
        return "nan"
    return f"{float(value):.{digits}f}"


def finding(figure: str, paper_finding: str, statistic: str, value: float, rule: str,
            passed: bool, note: str = "", why_not: str = "") -> Finding:
    """Build a row; a NaN value is never reproduced, and ``why_not`` is added to the note
    when the rule fails."""
    value = float(value) if value is not None else float("nan")
    ok = bool(passed) and math.isfinite(value)
    if not math.isfinite(value):
        note = f"{note}; could not be measured (NaN)" if note else "could not be measured (NaN)"
    if not ok and why_not:
        note = f"{note}. Why not: {why_not}" if note else f"Why not: {why_not}"
    return Finding(figure, paper_finding, statistic, value, rule, ok, note)


def findings_table(rows: Iterable[Finding]):
    """A pandas DataFrame: figure | paper finding | measured statistic | value | rule |
    reproduced? | note. Values are rounded to 3 decimals (stable notebook outputs)."""
    import pandas as pd

    data = [(r.figure, r.paper_finding, r.statistic, round(r.value, 3) if math.isfinite(r.value)
             else float("nan"), r.rule, "yes" if r.reproduced else "no", r.note) for r in rows]
    return pd.DataFrame(data, columns=list(COLUMNS))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: Iterable[Finding], *, notes: bool = True) -> str:
    """The findings as a GitHub-flavoured Markdown table (no extra dependency)."""
    cols = list(COLUMNS) if notes else list(COLUMNS[:-1])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.figure, r.paper_finding, r.statistic, fmt(r.value), r.rule,
                 "**yes**" if r.reproduced else "no"]
        if notes:
            cells.append(r.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --- statistics shared by the verdicts ---------------------------------------------------

def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN pairs are dropped.

    NaN when fewer than 3 pairs remain or either side is constant.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def offdiag_mean(matrix: np.ndarray) -> float:
    """Mean of a square matrix without its diagonal (NaN entries ignored)."""
    m = np.asarray(matrix, np.float64)
    mask = ~np.eye(m.shape[0], dtype=bool)
    vals = m[mask]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def nanmean(values: Any) -> float:
    v = np.asarray(values, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def halves(n: int) -> tuple[slice, slice]:
    """The lower and upper half of ``n`` ordered items (the middle one, if any, in neither)."""
    h = n // 2
    return slice(0, h), slice(n - h, n)
