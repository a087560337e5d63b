"""Models: loading (timm names, local weights, the offline zoo), layer catalogs, labels."""

from .catalog import BLOCK_KINDS, LayerCatalog, LayerPoint
from .labels import model_label
from .layers import family_of, layer_catalog
from .loading import load_model, load_weights_into, read_state_dict

__all__ = [
    "BLOCK_KINDS",
    "LayerCatalog",
    "LayerPoint",
    "family_of",
    "layer_catalog",
    "load_model",
    "load_weights_into",
    "model_label",
    "read_state_dict",
]
