"""Image sources: folders, PIL/arrays, torch Datasets, sample photos, the synthetic dataset."""

from .images import (
    DatasetImages,
    FolderImages,
    ImageSource,
    ListImages,
    TensorImages,
    as_images,
    to_pil,
)
from .preprocess import MultiModelBatches, balanced_batches, data_config, transform_for
from .samples import SamplePhotos, samples

# Importing the submodule binds ``vitlens.datasets.synthetic`` to the module; the import of
# the function below rebinds it, once and for all, to the function users call.
from .synthetic import SyntheticDataset, synthetic

__all__ = [
    "DatasetImages",
    "FolderImages",
    "ImageSource",
    "ListImages",
    "MultiModelBatches",
    "SamplePhotos",
    "SyntheticDataset",
    "TensorImages",
    "as_images",
    "balanced_batches",
    "data_config",
    "samples",
    "synthetic",
    "to_pil",
    "transform_for",
]
