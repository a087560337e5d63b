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


def __getattr__(name: str):
    # The synthetic dataset loads on first use. Importing the submodule binds the package
    # attribute ``synthetic`` to the module, so rebind it to the function afterwards.
    if name in ("synthetic", "SyntheticDataset"):
        import importlib

        module = importlib.import_module("vitlens.datasets.synthetic")
        globals()["synthetic"] = module.synthetic
        globals()["SyntheticDataset"] = module.SyntheticDataset
        return globals()[name]
    msg = f"module 'vitlens.datasets' has no attribute {name!r}"
    raise AttributeError(msg)


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
