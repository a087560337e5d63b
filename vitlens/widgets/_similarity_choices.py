"""What a ``SimilarityExplorer`` offers and reads back: layer selectors, a custom source's
size, and the images and layers of a loaded result."""

from __future__ import annotations

from typing import Any

from torch import nn

#: Layer selectors offered in the dropdowns (any kind or layer name can be typed).
LAYER_CHOICES = ("blocks", "all", "attn", "mlp_hidden", "resid_mid", "norm1", "unit", "branch",
                 "stage")


def source_size(images: Any) -> int:
    """How many images a custom source holds (512 if it cannot be read now)."""
    from ..datasets import as_images

    try:
        return max(len(as_images(images)), 4)
    except Exception:  # noqa: BLE001 - the run reports a bad source in the widget
        return 512


def result_class() -> type:
    """:class:`vitlens.SimilarityResult` (imported late: the package imports the widgets)."""
    from .. import SimilarityResult

    return SimilarityResult


class UnknownImages:
    """The images of a loaded result, known only by name (recomputing needs them passed)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.label = f"result's: {name}"
        self.message = (f"the images of this result ({name!r}) are not available here: pass "
                        "them as SimilarityExplorer.from_result(result, images=...), or choose "
                        "'samples' or 'synthetic'")


def result_images(meta: dict[str, Any]) -> Any:
    """The image choice a result's ``meta["images"]`` names (:class:`UnknownImages` if none)."""
    name = str(meta.get("images", ""))
    if name == "SyntheticDataset" or name.startswith("synthetic"):
        return "synthetic"
    if name.startswith("samples("):
        return "samples"
    return UnknownImages(name or "unknown")


def layer_spec(model: str | nn.Module, names: list[str]) -> str:
    """The selector that gives exactly ``names`` (on a model object or a zoo model), else the
    names themselves, separated by commas."""
    if isinstance(model, nn.Module) or model.startswith("vitlens/"):
        try:
            from ..models.layers import layer_catalog
            from ..models.loading import load_model

            cat = layer_catalog(model if isinstance(model, nn.Module) else load_model(model))
            for spec in LAYER_CHOICES:
                try:
                    if cat.select(spec) == names:
                        return spec
                except (KeyError, ValueError):
                    continue
        except Exception:  # noqa: BLE001 - the explicit names below always work
            pass
    return ", ".join(names)


def result_settings(result: Any, model_a: str | nn.Module | None,
                    model_b: str | nn.Module | None, images: Any,
                    kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Models A and B and the explorer's keyword arguments that reproduce ``result``.

    Arguments the caller gave win; ``images=None`` means the images ``result`` names.
    """
    meta = result.meta
    a = model_a if model_a is not None else meta.get("model_a", "vitlens/vit-cls")
    b = model_b if model_b is not None else meta.get("model_b")
    kwargs = dict(kwargs)
    kwargs.setdefault("token_mode", meta.get("token_mode", "flatten"))
    kwargs.setdefault("n_images", int(meta.get("n_images", 64)))
    if meta.get("batch_size"):
        kwargs.setdefault("batch_size", int(meta["batch_size"]))
    kwargs["images"] = images if images is not None else result_images(meta)
    kwargs.setdefault("layers", layer_spec(a, list(result.layers_a)))
    kwargs.setdefault("layers_b", layer_spec(b if b is not None else a, list(result.layers_b)))
    return a, b, kwargs


def split_layers(text: str) -> str | list[str]:
    """A typed selector: one kind or name, or several separated by commas."""
    if not text.strip():
        msg = "no layers chosen: type 'blocks', 'all', a kind or layer names separated by commas"
        raise ValueError(msg)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


__all__ = ["LAYER_CHOICES", "UnknownImages", "layer_spec", "result_class", "result_images",
           "result_settings", "source_size", "split_layers"]
