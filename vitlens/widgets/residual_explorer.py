"""``ResidualExplorer``: ‖z‖/‖f(z)‖ per token and block as a heatmap, and its curves (Fig 7)."""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as W
import numpy as np
from torch import nn

from ._base import MessageArea
from ._run_controls import CancellableImages, RunControls
from ._sources import ModelChoices, image_source
from ._static import StaticPicture
from .heatmap import HeatmapView

STAT_LABELS = {"ratio": "log10 ‖z‖/‖f(z)‖", "cos_branch": "cos(z, f(z))",
               "cos_stream": "cos(z, z + f(z))"}
#: Seconds a notebook's display waits for the result (its static picture shows it).
REPR_WAIT_S = 300.0


def _token_labels(n: int, npt: int) -> list[str]:
    side = int(round((n - npt) ** 0.5))
    names = ["CLS", "DIST", "REG"]
    out = [names[i] if i < len(names) else f"prefix {i}" for i in range(npt)]
    if side * side == n - npt:
        out += [f"({i // side},{i % side})" for i in range(n - npt)]
    else:
        out += [f"token {i}" for i in range(npt, n)]
    return out


class ResidualExplorer(RunControls, StaticPicture, W.VBox):
    """The residual stream against the branch: one heatmap cell per (token, sub-block).

    Rows are tokens (CLS first) and columns the attention and MLP sub-blocks in order; the
    colour is ``log10 ‖z‖/‖f(z)‖`` (or a cosine). The chart below shows per-block curves for
    the CLS token, the mean spatial token and the clicked token; clicking a point on the
    chart selects that sub-block in the heatmap.

    Without ``result`` the statistics are computed in a background thread (the kernel stays
    responsive; Cancel stops after the current batch, Run starts again); :meth:`wait` blocks
    until they are shown (for scripts and tests).

    Args:
        model: A zoo name, timm name or model object (ViT, Mixer, ResNet).
        images: ``"synthetic"``, ``"samples"`` or any image source.
        n_images: Images averaged.
        result: A precomputed :class:`~vitlens.analyses.residual.ResidualResult`.
        charts: Show the Altair curves.
    """

    repr_wait_s = REPR_WAIT_S

    def __init__(self, model: str | nn.Module = "vitlens/vit-cls", images: Any = "synthetic", *,
                 n_images: int = 32, batch_size: int = 16, device: Any = None,
                 result: Any = None, charts: bool = True) -> None:
        self.models = ModelChoices(model)
        self._label = self.models.add(model)
        self.images, self.n_images = images, n_images
        self.batch_size, self.device = batch_size, device
        self.result = result
        self._init_run_controls("vitlens-residual", tooltip="compute the statistics")
        self.message = MessageArea()
        self.stat = W.Dropdown(options=[("ratio ‖z‖/‖f(z)‖", "ratio"), ("cos(z, f(z))", "cos_branch"),
                                        ("cos(z, z+f(z))", "cos_stream")], value="ratio",
                               description="Statistic")
        # Only the branch kinds the model has are offered (set once the result is known).
        self.kind = W.Dropdown(options=["all"], value="all", description="Branches")
        self.heatmap = HeatmapView(title="skip path vs branch per token", row_title="token",
                                   col_title="sub-block", colormap="viridis", size=360)
        self.chart = None
        chart_box = self._chart_box = W.VBox([])
        if charts:
            from .charts import curves_chart, jupyter_chart, on_point_select

            self.chart = jupyter_chart(curves_chart(["-"], {"-": [np.nan]}, x_title="sub-block",
                                                    y_title=""))
            on_point_select(self.chart, "x_sel", "index", self._on_chart_x)
            chart_box.children = (self.chart,)
        self.stat.observe(lambda _c: self._redraw(), "value")
        self.kind.observe(lambda _c: self._redraw(), "value")
        self.heatmap.observe(lambda _c: self._update_chart(), "selected")
        self.run_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        controls = [self.stat, self.kind]
        if result is None:  # nothing to run or cancel for a precomputed result
            controls += [self.run_button, self.cancel_button, self.status]
        super().__init__([W.HBox(controls), self.message, W.HBox([self.heatmap, chart_box])])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-residual-explorer")
        self.refresh()

    def compute(self) -> Any:
        """The residual result (computed once on this thread, then kept)."""
        if self.result is None:
            self.result = self._compute()
        return self.result

    def _compute(self, cancel: threading.Event | None = None) -> Any:
        from ..analyses.residual import residual_ratio

        model = self.models.load(self._label)
        images = image_source(self.images, self.n_images)
        if cancel is not None:
            images = CancellableImages(images, cancel)
        return residual_ratio(model, images, n_images=self.n_images,
                              batch_size=self.batch_size, device=self.device, progress=False)

    def _columns(self, res: Any) -> list[int]:
        kinds = list(res.meta.get("kinds", []))
        if self.kind.value == "all":
            return list(range(len(res.meta["sub_blocks"])))
        cols = [k for k, kind in enumerate(kinds) if kind == self.kind.value]
        if not cols:
            msg = (f"this model has no {self.kind.value!r} sub-blocks (it has "
                   f"{sorted(set(kinds))}); choose another branch kind")
            raise ValueError(msg)
        return cols

    def table(self) -> tuple[np.ndarray, list[str], list[str]]:
        """The heatmap's (tokens, sub-blocks) values with row and column labels."""
        res = self.compute()
        stat, cols = self.stat.value, self._columns(res)
        names = [res.meta["sub_blocks"][k] for k in cols]
        key = f"{stat}_tokens"
        if key in res.arrays:
            vals = np.asarray(res.arrays[key], dtype=np.float64)[cols].T  # (N, K)
            rows = _token_labels(vals.shape[0], int(res.meta.get("num_prefix_tokens", 0)))
        else:  # CNNs: spatial mean only
            vals = np.asarray(res.arrays[stat], dtype=np.float64)[cols][:, 1:].T
            rows = ["spatial mean"]
        if stat == "ratio":
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = np.log10(vals)
        return vals, rows, names

    def branch_kinds(self) -> list[str]:
        """The branch kinds of this model's sub-blocks, in network order."""
        return list(dict.fromkeys(self.result.meta.get("kinds", []) if self.result else []))

    def _offer_kinds(self) -> None:
        kinds = ["all", *self.branch_kinds()]
        if list(self.kind.options) != kinds:
            keep = self.kind.value if self.kind.value in kinds else "all"
            with self.kind.hold_trait_notifications():
                self.kind.options = kinds
                self.kind.value = keep

    def refresh(self) -> None:
        """Show the table; without a result, compute it first in the background (the
        heatmap is empty meanwhile)."""
        with self._runs.lock:
            if self.result is not None:
                self._runs.supersede()
                self._busy = False
                self._redraw()
                self._buttons(running=False)
                return
            self.message.clear()
            self.heatmap.clear()
            self.heatmap.message = "computing…"
            self._chart_box.layout.display = "none"
            self._begin(self._work, status=f"computing on {self.n_images} images…")

    def _work(self, cancel: threading.Event) -> None:
        def show(res: Any) -> None:
            self.result = res
            self._redraw()

        self._outcome(cancel, lambda: self._compute(cancel), show,
                      lambda res: f"done: {res.meta.get('n_images', self.n_images)} images",
                      "failed")

    def _cancelled(self) -> None:
        self.heatmap.message = "cancelled: press Run to compute"
        self._set_status("cancelled: nothing shown (press Run to compute)")

    def _can_run(self) -> bool:
        return self.result is None

    def _redraw(self) -> None:
        """The table of the result for the chosen statistic and branches (nothing while
        the result is computed: it is drawn with the choices made by then)."""
        with self._runs.lock:
            if self.result is None:
                return
            try:
                self._offer_kinds()
                vals, rows, cols = self.table()
            except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
                self._show_error(err)
                return
            self._draw(vals, rows, cols)

    def _draw(self, vals: np.ndarray, rows: list[str], cols: list[str]) -> None:
        self.message.clear()
        self.heatmap.message = ""
        self._chart_box.layout.display = None
        self.heatmap.value_label = STAT_LABELS[self.stat.value]
        self.heatmap.vmin, self.heatmap.vmax = (-1.0, 1.0) if self.stat.value != "ratio" else (None, None)
        self.heatmap.colormap = "rdbu" if self.stat.value != "ratio" else "viridis"
        self.heatmap.set_matrix(vals, rows, cols)
        self._update_chart()

    def _show_error(self, err: BaseException) -> None:
        """The error, and an empty heatmap and chart (nothing of an earlier choice)."""
        self.message.error(err)
        self.heatmap.clear()
        self.heatmap.message = "no result: see the message above"
        self._chart_box.layout.display = "none"

    def _static_views(self) -> list[Any]:
        return [self.heatmap]

    def _update_chart(self) -> None:
        if self.chart is None or self.heatmap.shape == (0, 0):
            return
        from .charts import curves_chart

        m = self.heatmap.matrix.astype(np.float64)
        rows, cols = self.heatmap.row_labels, self.heatmap.col_labels
        series: dict[str, Any] = {}
        npt = int(self.result.meta.get("num_prefix_tokens", 0)) if self.result is not None else 0
        if npt and len(rows) > 1:
            series["CLS"] = m[0]
        series["spatial mean" if len(rows) > 1 else rows[0]] = np.nanmean(m[npt:], axis=0)
        sel = self.heatmap.selected
        if sel is not None and len(rows) > 1:
            series[f"token {rows[sel[0]]}"] = m[sel[0]]
        self.chart.chart = curves_chart(cols, series, x_title="sub-block (index)",
                                        y_title=self.heatmap.value_label,
                                        current=None if sel is None else sel[1],
                                        title="per-block curves")

    def _on_chart_x(self, values: list[Any]) -> None:
        if values:
            row = self.heatmap.selected[0] if self.heatmap.selected is not None else 0
            self.heatmap.selected = [row, int(values[0])]

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.heatmap.shape)
        return (f"ResidualExplorer({self._label}, stat={self.stat.value!r}, "
                f"branches={self.kind.value!r}, matrix={shape})")
