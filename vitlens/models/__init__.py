"""Models: loading (timm names, local weights, the offline zoo) and layer catalogs."""

from .catalog import BLOCK_KINDS, LayerCatalog, LayerPoint
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
    "read_state_dict",
]
