"""The :class:`Finding` row, the findings table and the small statistics the verdicts use."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

COLUMNS = ("figure", "paper finding", "measured statistic", "value", "control (random init)",
           "margin", "rule", "verdict", "note")

#: The three verdicts of a controlled finding, and the one of a finding without a control.
REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED = "reproduced", "inconclusive", "not reproduced"
UNCONTROLLED = "rule met, no control"


def rule_direction(rule: str) -> int:
    """+1 when the rule asks for a large value (``>``, ``>=``, ``between``), -1 for ``<``."""
    r = rule.strip().lower()
    if r.startswith("<"):
        return -1
    if r.startswith((">", "between")):
        return 1
    msg = f"cannot tell the direction of the rule {rule!r}; start it with >, >=, <, <= or between"
    raise ValueError(msg)


@dataclass(frozen=True)
class Finding:
    """One checked claim of the paper, with its random-init control.

    Attributes:
        figure: The paper's figure(s), e.g. ``"Fig 1"``.
        paper_finding: The claim, in plain words.
        statistic: What was measured, chosen before looking at any result.
        value: The measured number on the trained models (NaN when it could not be measured).
        rule: The fixed rule the value is compared with, e.g. ``">= 0.5"``.
        passes: Whether the trained models satisfy ``rule`` (never true for NaN).
        note: The numbers behind the value, and, when not reproduced, the likely reason.
        control: The same statistic on seeded random-init copies of the same architectures
            (same images, same code path), one value per seed; empty when no control ran.
        control_passes: Whether each control satisfies the rule.

    The verdict (:attr:`verdict`) is ``"reproduced"`` only when the trained models pass the
    rule, no control passes it, and the trained value lies beyond every control value by more
    than the controls' spread over seeds (:attr:`margin` > :attr:`spread`);
    ``"inconclusive"`` when the trained models pass but a control passes too or the margin is
    within the spread; ``"not reproduced"`` when the trained models fail the rule. Without a
    control a passing row reads ``"rule met, no control"``.
    """

    figure: str
    paper_finding: str
    statistic: str
    value: float
    rule: str
    passes: bool
    note: str = ""
    control: tuple[float, ...] = ()
    control_passes: tuple[bool, ...] = ()

    @property
    def direction(self) -> int:
        return rule_direction(self.rule)

    @property
    def controlled(self) -> bool:
        return len(self.control) > 0

    @property
    def margin(self) -> float:
        """How far the trained value lies beyond the control value most favourable to the
        rule, in the rule's direction (NaN without a finite control)."""
        c = np.asarray(self.control, np.float64)
        if not c.size or not np.isfinite(c).all() or not math.isfinite(self.value):
            return float("nan")
        best = c.max() if self.direction > 0 else c.min()
        return float(self.direction * (self.value - best))

    @property
    def spread(self) -> float:
        """Max - min of the control over seeds (0 for one seed; NaN without a control)."""
        c = np.asarray(self.control, np.float64)
        if not c.size or not np.isfinite(c).all():
            return float("nan")
        return float(c.max() - c.min())

    @property
    def verdict(self) -> str:
        if not self.passes:
            return NOT_REPRODUCED
        if not self.controlled:
            return UNCONTROLLED
        if any(self.control_passes):
            return INCONCLUSIVE
        m, s = self.margin, self.spread
        # a control that could not be measured (NaN) cannot be beaten: inconclusive
        return REPRODUCED if math.isfinite(m) and math.isfinite(s) and m > s else INCONCLUSIVE

    @property
    def reproduced(self) -> bool:
        """True for ``"reproduced"`` (and, for a row without a control, when the rule is met)."""
        return self.verdict in (REPRODUCED, UNCONTROLLED)

    def control_text(self) -> str:
        """The control for tables: its mean, and the range over seeds."""
        if not self.controlled:
            return "-"
        c = np.asarray(self.control, np.float64)
        if len(c) == 1:
            return fmt(c[0])
        return f"{fmt(np.mean(c))} [{fmt(c.min())}, {fmt(c.max())}]"

    def margin_text(self) -> str:
        """The margin beside the spread it must exceed, e.g. ``"0.210 > 0.031"``."""
        if not self.controlled:
            return "-"
        m, s = self.margin, self.spread
        op = ">" if math.isfinite(m) and math.isfinite(s) and m > s else "<="
        return f"{fmt(m)} {op} {fmt(s)}"

    def with_control(self, controls: Sequence[Finding]) -> Finding:
        """This row with the values and rule checks of the same row on the controls."""
        for c in controls:
            if (c.figure, c.statistic) != (self.figure, self.statistic):
                msg = (f"control row {c.figure!r} / {c.statistic!r} does not match "
                       f"{self.figure!r} / {self.statistic!r}")
                raise ValueError(msg)
        return replace(self, control=tuple(float(c.value) for c in controls),
                       control_passes=tuple(bool(c.passes) for c in controls))

    def __str__(self) -> str:
        text = (f"{self.figure}: {self.verdict}. {self.statistic} = {fmt(self.value)} "
                f"(rule: {self.rule})")
        if self.controlled:
            text += f"; random-init control {self.control_text()}, margin {self.margin_text()}"
        return f"{text}; {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"] = None if not math.isfinite(self.value) else float(self.value)
        d["control"] = [None if not math.isfinite(v) else float(v) for v in self.control]
        d["control_passes"] = list(self.control_passes)
        d["verdict"] = self.verdict
        for k in ("margin", "spread"):
            v = getattr(self, k)
            d[k] = None if not math.isfinite(v) else v
        return d


def fmt(value: float, digits: int = 3) -> str:
    """A fixed-point number for tables (``nan`` stays ``nan``)."""
    if value is None or not math.isfinite(float(value)):
        return "nan"
    return f"{float(value):.{digits}f}"


def finding(figure: str, paper_finding: str, statistic: str, value: float, rule: str,
            passed: bool, note: str = "", why_not: str = "") -> Finding:
    """Build a row; a NaN value never passes, and ``why_not`` is added to the note when the
    rule fails."""
    value = float(value) if value is not None else float("nan")
    rule_direction(rule)  # a rule the margin can be measured against
    ok = bool(passed) and math.isfinite(value)
    if not math.isfinite(value):
        note = f"{note}; could not be measured (NaN)" if note else "could not be measured (NaN)"
    if not ok and why_not:
        note = f"{note}. Why not: {why_not}" if note else f"Why not: {why_not}"
    return Finding(figure, paper_finding, statistic, value, rule, ok, note)


def with_controls(rows: Sequence[Finding], controls: Sequence[Sequence[Finding]]) -> list[Finding]:
    """Attach to each row the same row computed on each control (one list per seed)."""
    for c in controls:
        if len(c) != len(rows):
            msg = f"a control run gave {len(c)} findings, the trained run {len(rows)}"
            raise ValueError(msg)
    return [r.with_control([c[i] for c in controls]) for i, r in enumerate(rows)]


def findings_table(rows: Iterable[Finding]):
    """A pandas DataFrame with :data:`COLUMNS`. Values are rounded to 3 decimals (stable
    notebook outputs)."""
    import pandas as pd

    data = [(r.figure, r.paper_finding, r.statistic, round(r.value, 3) if math.isfinite(r.value)
             else float("nan"), r.control_text(), r.margin_text(), r.rule, r.verdict, r.note)
            for r in rows]
    return pd.DataFrame(data, columns=list(COLUMNS))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: Iterable[Finding], *, notes: bool = True) -> str:
    """The findings as a GitHub-flavoured Markdown table (no extra dependency)."""
    cols = list(COLUMNS) if notes else list(COLUMNS[:-1])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        verdict = f"**{r.verdict}**" if r.verdict == REPRODUCED else r.verdict
        cells = [r.figure, r.paper_finding, r.statistic, fmt(r.value), r.control_text(),
                 r.margin_text(), r.rule, verdict]
        if notes:
            cells.append(r.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --- statistics shared by the verdicts ---------------------------------------------------

def small_data_kinds(matched: Any, seeds: Sequence[Any]) -> str:
    """What a row that compares with several small-data models compared, in words: ``"two
    step budgets"``, ``"3 training seeds"`` or both."""
    parts = (["two step budgets"] if matched is not None else []) + (
        [f"{len(seeds) + 1} training seeds"] if len(seeds) else [])
    return " and ".join(parts)


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
