"""Layer catalogs: the ordered, named capture points of a model.

A catalog is built per architecture family (one module per family, as in timm). Each
:class:`LayerPoint` says which module to hook, whether to read its input or output, and how
its activation is laid out, so that :mod:`vitlens.capture` can apply a token mode to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from torch import nn

# Layouts of a captured activation (n = examples):
#   "tokens"   (n, N, C), the first ``num_prefix_tokens`` are prefix (CLS / distillation) tokens
#   "tokens_t" (n, C, N), token-mixing MLP outputs of MLP-Mixer
#   "nchw"     (n, C, H, W) conv feature maps
#   "nhwc"     (n, H, W, C)
#   "vector"   (n, C)
#   "auto"     read from the tensor (:func:`vitlens.capture.activations.resolved`): by its
#              rank and, when the point knows its ``channels``, by where they are (4: nchw
#              or nhwc, 3: tokens, 2: vector); a named module of any nn.Module, or a timm
#              ``feature_info`` stage of an unsupported family (Swin's are NHWC, EVA's
#              and BEiT's are tokens)
LAYOUTS = ("tokens", "tokens_t", "nchw", "nhwc", "vector", "auto")

#: Kinds that the ``"blocks"`` selector picks: one point per residual block or unit.
BLOCK_KINDS = ("block", "unit")


@dataclass(frozen=True)
class LayerPoint:
    """One capture point.

    Attributes:
        name: Stable dotted name, e.g. ``"blocks.3.attn"`` or ``"blocks.3.resid_mid"``.
        kind: What the point is: ``embed``, ``norm``, ``attn``, ``resid_mid`` (the stream after
            the attention add), ``mlp_hidden``, ``mlp``, ``block``, ``stem``, ``unit``,
            ``unit_hidden``, ``branch`` (a residual branch before the add), ``stage``,
            ``final_norm``, ``token_mix`` or ``feature``.
        module: Dotted path of the hooked module inside the model.
        hook: ``"output"`` (forward hook) or ``"input"`` (forward pre-hook, first argument).
        layout: How the activation is laid out, one of :data:`LAYOUTS`.
        num_prefix_tokens: Prefix tokens at the front of a ``tokens`` layout.
        block: Index of the block or unit in network order, or ``None``.
        clone: Clone the activation in the hook, because the model later changes it in place
            (timm's ResNet does ``x += shortcut`` on the last norm's output).
        in_all: Whether ``"all"`` picks the point. Stage outputs (which repeat their last
            unit) and ViT MLP outputs are left out, so ``"all"`` is the paper's density.
        channels: The activation's channel count when known (``feature_info``'s
            ``num_chs``): an ``"auto"`` layout finds the channel axis with it.
        map_layout: The layout an ``"auto"`` map takes when both of its candidate channel
            axes have ``channels`` entries: the model's declared ``output_fmt``.
    """

    name: str
    kind: str
    module: str
    hook: str = "output"
    layout: str = "tokens"
    num_prefix_tokens: int = 0
    block: int | None = None
    clone: bool = False
    in_all: bool = True
    channels: int | None = None
    map_layout: str = "nchw"


@dataclass
class LayerCatalog:
    """The ordered capture points of one model, with selection by name or kind."""

    family: str
    points: list[LayerPoint]
    grid_size: tuple[int, int] | None = None
    patch_size: tuple[int, int] | None = None
    _index: dict[str, LayerPoint] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {p.name: p for p in self.points}
        if len(self._index) != len(self.points):
            msg = f"duplicate capture point names in the {self.family} catalog"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[LayerPoint]:
        return iter(self.points)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> LayerPoint:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(self._unknown_message(name)) from None

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}: {n}" for k, n in self.kind_counts().items())
        return f"LayerCatalog(family={self.family!r}, {len(self)} points; {kinds})"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.points]

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(p.kind for p in self.points))

    def kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.points:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return counts

    def select(self, spec: str | Iterable[str] | None = "blocks") -> list[str]:
        """Names of the points that ``spec`` picks, in network order.

        Args:
            spec: ``"all"`` (the paper-density set), ``"blocks"`` (one point per block
                or unit), a kind such as ``"attn"``, or a list mixing names and kinds.
                ``None`` means ``"blocks"``.

        Raises:
            KeyError: A name or kind is not in this catalog; the message lists close matches.
        """
        if spec is None:
            spec = "blocks"
        if not isinstance(spec, str) and not (
                isinstance(spec, Iterable) and not isinstance(spec, bytes | dict)):
            msg = (f"layers={spec!r} ({type(spec).__name__}) is not a layer selector; pass "
                   "'all', 'blocks', a kind such as 'attn', a layer name, or a list of layer "
                   "names (to pick by position: vitlens.layer_catalog(model).names[i])")
            raise TypeError(msg)
        items = [spec] if isinstance(spec, str) else list(spec)
        bad = [s for s in items if not isinstance(s, str)]
        if bad:
            msg = (f"layer selectors must be strings (names or kinds); got {bad!r} in {items!r}"
                   ". To pick by position use vitlens.layer_catalog(model).names[i]")
            raise TypeError(msg)
        if not items:
            msg = "empty layer selection: pass 'all', 'blocks', a kind or a list of layer names"
            raise ValueError(msg)
        chosen: set[str] = set()
        for item in items:
            chosen.update(self._select_one(item))
        return [p.name for p in self.points if p.name in chosen]

    def _select_one(self, item: str) -> list[str]:
        if item == "all":
            return [p.name for p in self.points if p.in_all]
        if item == "blocks":
            names = [p.name for p in self.points if p.kind in BLOCK_KINDS]
            return names or [p.name for p in self.points if p.kind in ("stage", "feature")]
        if item in self._index:
            return [item]
        by_kind = [p.name for p in self.points if p.kind == item]
        if by_kind:
            return by_kind
        raise KeyError(self._unknown_message(item))

    def _unknown_message(self, name: str) -> str:
        vocab = self.names + self.kinds + ["all", "blocks"]
        close = difflib.get_close_matches(str(name), vocab, n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        return (
            f"unknown layer or kind {name!r} for this {self.family} model.{hint} "
            f"Kinds here: {self.kinds}; see vitlens.layer_catalog(model).names for all names."
        )

    def to_dataframe(self):  # -> pandas.DataFrame
        """One row per point: name, kind, module, hook, layout, block."""
        import pandas as pd

        return pd.DataFrame([p.__dict__ for p in self.points])


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted ``path`` (``""`` is the model itself)."""
    return model.get_submodule(path) if path else model


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = tuple(int(x) for x in v)[:2]
    return (a, b)


def feature_info_points(model: nn.Module) -> list[LayerPoint]:
    """Fallback for any timm model: its ``feature_info`` stages.

    Their layout is read from each activation (``"auto"``, with the stage's ``num_chs``):
    convolutional stages are NCHW, but Swin's and SAM's are NHWC and EVA's, BEiT's and CaiT's
    blocks are (n, N, C) tokens, with the model's ``num_prefix_tokens`` in front.
    """
    info = getattr(model, "feature_info", None)
    points: list[LayerPoint] = []
    if info is None:
        return points
    entries = info.info if hasattr(info, "info") else info
    npt = int(getattr(model, "num_prefix_tokens", 0) or 0)
    fmt = "nhwc" if str(getattr(model, "output_fmt", "NCHW")).upper() == "NHWC" else "nchw"
    for i, entry in enumerate(entries):
        module = entry["module"]
        try:
            model.get_submodule(module)
        except AttributeError:
            continue
        chs = entry.get("num_chs")
        points.append(LayerPoint(module, "feature", module, layout="auto", block=i, clone=True,
                                 num_prefix_tokens=npt, channels=int(chs) if chs else None,
                                 map_layout=fmt))
    return points


__all__ = [
    "BLOCK_KINDS",
    "LAYOUTS",
    "LayerCatalog",
    "LayerPoint",
    "feature_info_points",
    "get_module",
    "pair",
]
