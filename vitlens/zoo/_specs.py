"""The zoo's model list and shared name handling (stdlib only: cheap to import)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).parent
WEIGHTS_DIR = ZOO_DIR / "weights"
CARDS_DIR = ZOO_DIR / "cards"
PREFIX = "vitlens/"

# Depth of every zoo ViT and the middle block whose skips vit-noskip removes.
VIT_DEPTH = 6
NOSKIP_BLOCK = 3

# name -> how it is built and trained. ``arch`` picks the builder in ``architectures``;
# ``objective`` is "classify" (default) or "masked-patches" (self-supervised pretraining on
# crops of the bundled photos, see ``pretrain``); ``fraction`` is the share of the training
# set used (same number of steps); ``domain`` the dataset domain; ``train_seed`` the seed of
# its training images (default 0: the shapes set every classifier uses); ``init_from`` a zoo model
# to start from (``steps``/``lr`` default to the fine-tuning ones, unless set here);
# ``seed`` the seed of its initialisation and data order (default: ``train.DEFAULTS["seed"]``,
# 0; the ``-seed<k>`` replicates of Fig 12's family set it); ``layer_decay`` an optional
# layer-wise learning-rate decay of a fine-tuned pretrained ViT (BEiT/MAE practice; tried in
# docs/ZOO.md, unused by the bundled zoo).
SPECS: dict[str, dict[str, Any]] = {
    "vit-mim": {
        "arch": "vit-mim",
        "objective": "masked-patches",
        "stands_in_for": "large-scale pretraining: a ViT pretrained by predicting masked "
        "patches of photo crops (no classifier head)",
    },
    "vit-cls": {
        "arch": "vit-cls",
        "init_from": "vit-mim",
        "steps": 2000,
        "lr": 1e-3,
        "stands_in_for": "ViT-B/16 (CLS token), pretrained at scale, then trained on the task",
    },
    "vit-gap": {
        "arch": "vit-gap",
        "init_from": "vit-mim",
        "steps": 2000,
        "lr": 1e-3,
        "stands_in_for": "ViT-B/16 trained with global average pooling (same pretraining, "
        "data and steps as vit-cls)",
    },
    "vit-sup": {
        "arch": "vit-cls",
        "stands_in_for": "a ViT trained on the labelled set only, without pretraining (the "
        "ImageNet-only ViTs of Fig 4 and C.5)",
    },
    "resnet": {"arch": "resnet", "stands_in_for": "BiT ResNet50x1 (pre-activation ResNetV2)"},
    "mixer": {"arch": "mixer", "stands_in_for": "MLP-Mixer B/16"},
    "vit-cls-3pct": {"arch": "vit-cls", "fraction": 0.03, "stands_in_for": "ViT on 3% of JFT"},
    "vit-cls-10pct": {"arch": "vit-cls", "fraction": 0.10, "stands_in_for": "ViT on 10% of JFT"},
    "vit-cls-30pct": {"arch": "vit-cls", "fraction": 0.30, "stands_in_for": "ViT on 30% of JFT"},
    "vit-cls-60pct": {"arch": "vit-cls", "fraction": 0.60, "stands_in_for": "ViT on 60% of JFT"},
    "vit-sup-7k": {
        "arch": "vit-cls",
        "steps": 7000,
        "stands_in_for": "vit-sup trained for vit-cls's whole step budget (5,000 pretraining + "
        "2,000 fine-tuning steps): the compute-matched supervised ViT (Fig 4, 13), and the normal "
        "ViT trained like vit-noskip (Fig 8)",
    },
    f"vit-noskip-{NOSKIP_BLOCK}": {
        "arch": "vit-noskip",
        "noskip_block": NOSKIP_BLOCK,
        "steps": 7000,
        "stands_in_for": f"ViT-B/32 without skip connections in block {NOSKIP_BLOCK} (Fig. 8)",
    },
    "vit-cls-ft": {
        "arch": "vit-cls",
        "domain": 1,
        "init_from": "vit-cls",
        "stands_in_for": "ViT fine-tuned on a distant domain (App. G)",
    },
    "vit-cls-ft-near": {
        "arch": "vit-cls",
        "domain": 0,
        "train_seed": 1,
        "init_from": "vit-cls",
        "stands_in_for": "ViT fine-tuned on a near domain: new images of the style it was "
        "trained on (App. G; ImageNet after JFT)",
    },
}
#: Training seeds of Fig 12's family (``vit-sup`` and the data fractions): seed 0 is the
#: models above; each further seed adds ``<name>-seed<k>``, trained identically but for the seed
#: of its initialisation and data order.
SCALE_FAMILY = ("vit-sup", "vit-cls-3pct", "vit-cls-10pct", "vit-cls-30pct", "vit-cls-60pct")
SCALE_SEEDS = (0, 1, 2)
for _seed in SCALE_SEEDS[1:]:
    for _name in SCALE_FAMILY:
        SPECS[f"{_name}-seed{_seed}"] = {
            **SPECS[_name], "seed": _seed,
            "stands_in_for": f"{SPECS[_name]['stands_in_for']}; training seed {_seed}",
        }
# Every ViT trained on the shapes (vit-cls, vit-gap, vit-sup, the data fractions, vit-noskip)
# uses the same 19,200-image set, seen about 3.3 times in 2,000 steps of 32: at this scale
# repeated data beats a single pass, and the fractions overfit measurably. The ResNet and the
# Mixer train on 64,000 images (one pass, ``n_train=None``: steps x batch size).
CLS_TRAIN_N = 19_200
for _name in (
    "vit-cls",
    "vit-gap",
    "vit-sup",
    "vit-sup-7k",
    "vit-cls-3pct",
    "vit-cls-10pct",
    "vit-cls-30pct",
    "vit-cls-60pct",
    f"vit-noskip-{NOSKIP_BLOCK}",
    *(f"{n}-seed{k}" for k in SCALE_SEEDS[1:] for n in SCALE_FAMILY),
):
    SPECS[_name]["n_train"] = CLS_TRAIN_N
for _spec in SPECS.values():
    _spec.setdefault("objective", "classify")
    _spec.setdefault("n_train", None)
    _spec.setdefault("fraction", 1.0)
    _spec.setdefault("domain", 0)
    _spec.setdefault("train_seed", 0)
    _spec.setdefault("init_from", None)


class ZooNameError(KeyError, ValueError):
    """An unknown zoo model name; the message lists the zoo and close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def canonical(name: str) -> str:
    """``"vitlens/vit-cls"`` or ``"vit-cls"`` -> ``"vit-cls"``; unknown names raise.

    Raises:
        ZooNameError: (a ``KeyError`` and ``ValueError``) for a name not in the zoo.
    """
    if not isinstance(name, str):
        msg = f"a zoo model name must be a string, got {type(name).__name__}"
        raise TypeError(msg)
    short = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if short in SPECS:
        return short
    close = difflib.get_close_matches(short, list(SPECS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    msg = f"unknown zoo model {name!r}.{hint} Available: {', '.join(SPECS)}."
    raise ZooNameError(msg)


def read_card(name: str, cards_dir: Path | None = None) -> dict[str, Any]:
    """The JSON model card of a zoo model.

    Raises:
        ZooNameError: unknown name.
        FileNotFoundError: the model has no card yet (it was never trained).
    """
    short = canonical(name)
    path = (cards_dir or CARDS_DIR) / f"{short}.json"
    if not path.is_file():
        msg = (
            f"no model card for {short!r} at {path}; train it: python -m vitlens.zoo.train {short}"
        )
        raise FileNotFoundError(msg)
    return json.loads(path.read_text())
