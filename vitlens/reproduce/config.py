"""Which models and images the reproduction uses: the offline zoo, or the paper's timm models.

The notebooks' parameter cell picks ``MODELS = "zoo"`` (default, offline) or
``MODELS = "pretrained"`` (downloads the timm checkpoints named in PAPER.md); everything
after that cell is the same code either way:

>>> M = vitlens.reproduce.models("zoo")      # role -> model name
>>> images = vitlens.reproduce.test_images(512)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..zoo._specs import SCALE_SEEDS

__all__ = ["FULL", "PRETRAINED_MODELS", "QUICK", "ROLES", "SMALL_DATA_SEED_ROLES", "ZOO_MODELS",
           "Settings", "models", "patch_size", "probe_images", "test_images"]

#: role -> what the role stands for in the paper.
ROLES = {
    "vit": "a ViT with a CLS token (ViT-B/16 in the paper)",
    "vit_gap": "a ViT trained with global average pooling instead of CLS",
    "resnet": "a ResNet (BiT ResNet50x1)",
    "mixer": "an MLP-Mixer (Mixer-B/16)",
    "vit_small_data": "the same ViT without large-scale pretraining (zoo: trained on the labelled "
                      "shapes only; timm: ImageNet-1k instead of 21k)",
    "vit_small_data_matched": "the same ViT without pretraining, trained for the pretrained "
                              "ViT's whole step budget (zoo: vit-sup-7k; no timm counterpart: "
                              "None): Fig 4 and 13 compare with it too, so compute alone cannot "
                              "earn them",
    "vit_zoo": "the zoo ViT trained like the zoo-only models (supervised, same data and steps): "
               "their same-architecture reference",
    "vit_3pct": "the ViT trained on 3% of the data",
    "vit_10pct": "the ViT trained on 10% of the data",
    "vit_30pct": "the ViT trained on 30% of the data",
    "vit_60pct": "the ViT trained on 60% of the data",
    "vit_noskip": "the ViT trained without the skip connections of one middle block",
    "vit_noskip_ref": "the normal ViT trained with the no-skip ViT's recipe (Fig 8's reference)",
    "vit_ft_base": "the ViT the two fine-tunes start from (App. G)",
    "vit_ft_near": "that ViT after fine-tuning on a near domain (new images of its own style)",
    "vit_ft": "that ViT after fine-tuning on a distant domain",
}

ZOO_MODELS = {
    "vit": "vitlens/vit-cls",
    "vit_gap": "vitlens/vit-gap",
    "resnet": "vitlens/resnet",
    "mixer": "vitlens/mixer",
    "vit_small_data": "vitlens/vit-sup",
    "vit_small_data_matched": "vitlens/vit-sup-7k",
    "vit_zoo": "vitlens/vit-sup",
    "vit_3pct": "vitlens/vit-cls-3pct",
    "vit_10pct": "vitlens/vit-cls-10pct",
    "vit_30pct": "vitlens/vit-cls-30pct",
    "vit_60pct": "vitlens/vit-cls-60pct",
    "vit_noskip": "vitlens/vit-noskip-3",
    "vit_noskip_ref": "vitlens/vit-sup-7k",
    "vit_ft_base": "vitlens/vit-cls",
    "vit_ft_near": "vitlens/vit-cls-ft-near",
    "vit_ft": "vitlens/vit-cls-ft",
}

#: Fig 12's roles, repeated for every further training seed as ``<role>_seed<k>`` (the zoo's
#: ``<model>-seed<k>``; ``SCALE_SEEDS`` in ``vitlens.zoo._specs``).
SCALE_ROLES = ("vit_zoo", "vit_3pct", "vit_10pct", "vit_30pct", "vit_60pct")
for _k in SCALE_SEEDS[1:]:
    for _role in SCALE_ROLES:
        ROLES[f"{_role}_seed{_k}"] = f"{ROLES[_role]}; training seed {_k}"
        ZOO_MODELS[f"{_role}_seed{_k}"] = f"{ZOO_MODELS[_role]}-seed{_k}"

#: Further training seeds of the small-data ViT, ``vit_small_data_seed<k>`` (the zoo's
#: ``vit-sup-seed<k>``): Fig 4 and Fig 13 compare the pretrained ViT with every one, since the
#: small-data ViT's middle layers vary over training seeds by more than Fig 13's bar
#: (docs/ZOO.md 3r). The pretrained models have no public seed repeats: ``None``.
SMALL_DATA_SEED_ROLES = tuple(f"vit_small_data_seed{k}" for k in SCALE_SEEDS[1:])
for _k, _role in zip(SCALE_SEEDS[1:], SMALL_DATA_SEED_ROLES, strict=True):
    ROLES[_role] = f"{ROLES['vit_small_data']}; training seed {_k}"
    ZOO_MODELS[_role] = f"{ZOO_MODELS['vit_small_data']}-seed{_k}"

#: The closest public checkpoints (PAPER.md). Roles without a public counterpart (the
#: data-fraction ViTs and the no-skip ViT were trained by the paper's authors) keep the zoo
#: model, and are compared with ``vit_zoo``, the zoo ViT of the same architecture. The GAP
#: ViT has 4 register tokens, unlike the paper's. App. G keeps the zoo's three models: timm has
#: a near-domain fine-tune of the in21k ViT (its ImageNet-1k one) but no distant-domain one,
#: and the comparison needs both fine-tunes of one base.
PRETRAINED_MODELS = {
    **ZOO_MODELS,
    "vit": "vit_base_patch16_224.augreg_in21k",
    "vit_gap": "vit_betwixt_patch16_reg4_gap_256.sbb_in12k",
    "resnet": "resnetv2_50x1_bit.goog_in21k",
    "mixer": "mixer_b16_224.goog_in21k",
    "vit_small_data": "vit_base_patch16_224.augreg_in1k",
    "vit_small_data_matched": None,
    **dict.fromkeys(SMALL_DATA_SEED_ROLES),
}


def models(kind: str = "zoo") -> dict[str, str]:
    """Model names by role (see :data:`ROLES`) for ``kind="zoo"`` or ``"pretrained"``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "zoo":
        return dict(ZOO_MODELS)
    if kind == "pretrained":
        return dict(PRETRAINED_MODELS)
    msg = f"MODELS={kind!r}; choose 'zoo' (offline, bundled) or 'pretrained' (timm, internet)"
    raise ValueError(msg)


def test_images(n: int, *, folder: Any = None, seed: int = 0, domain: int = 0):
    """The images every analysis runs on: ``n`` synthetic test images, or a folder's first n.

    Args:
        n: Number of images.
        folder: ``None`` for :func:`vitlens.datasets.synthetic` (works with every model:
            each model's preprocessing resizes them), or a folder of natural images (for
            the pretrained models, e.g. ImageNet validation images).
        seed, domain: Passed to :func:`vitlens.datasets.synthetic`.
    """
    from ..datasets import as_images, synthetic

    if folder is None:
        return synthetic("test", n, seed=seed, domain=domain)
    src = as_images(folder)
    if len(src) < n:
        msg = f"the folder {folder!r} has {len(src)} images but {n} are needed; lower N_IMAGES"
        raise ValueError(msg)
    return src


def probe_images(n_train: int, n_test: int, *, seed: int = 0):
    """Labelled (train, test) synthetic images for few-shot probes (validation and test
    splits, which the zoo never trained on)."""
    from ..datasets import synthetic

    return synthetic("val", n_train, seed=seed), synthetic("test", n_test, seed=seed)


def patch_size(model: Any) -> int:
    """A ViT's patch size in input pixels (from its layer catalog)."""
    from ..models import layer_catalog, load_model

    cat = layer_catalog(load_model(model) if isinstance(model, str) else model)
    if cat.patch_size is None:
        msg = f"{model!r} has no patch grid"
        raise ValueError(msg)
    return int(cat.patch_size[0])


@dataclass(frozen=True)
class Settings:
    """How many images each analysis uses (the notebooks use the same numbers).

    Attributes:
        n_images: Test images for CKA, attention, residual and localization analyses.
        batch_size: Images per batch.
        erf_images: Images averaged for effective receptive fields (the paper: 32).
        probe_train, probe_test: Few-shot pool and test images for linear probes.
        shots, seeds: Few-shot examples per class, and one draw per seed.
        folder: ``None`` for the synthetic test images, or a folder of natural images for the
            analyses that take unlabelled images (the notebooks' ``IMAGES`` parameter).
    """

    n_images: int = 512
    batch_size: int = 128
    erf_images: int = 32
    probe_train: int = 500
    probe_test: int = 1000
    shots: int = 10
    seeds: tuple[int, ...] = field(default=tuple(range(10)))
    folder: str | None = None


FULL = Settings()
QUICK = Settings(n_images=32, batch_size=32, erf_images=2, probe_train=200, probe_test=32,
                 shots=5, seeds=(0,))
