"""Models: loading (timm names, local weights, the offline zoo), layer catalogs, labels."""

from .catalog import BLOCK_KINDS, LayerCatalog, LayerPoint
from .config import has_data_config, with_data_config
from .labels import model_label
from .layers import catalog_for, family_of, layer_catalog
from .loading import load_model, load_weights_into, read_state_dict

__all__ = [
    "BLOCK_KINDS",
    "LayerCatalog",
    "LayerPoint",
    "catalog_for",
    "family_of",
    "has_data_config",
    "layer_catalog",
    "load_model",
    "load_weights_into",
    "model_label",
    "read_state_dict",
    "with_data_config",
]
