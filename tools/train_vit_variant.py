"""Train the zoo's ViT recipe with another shape: heads, depth, patch or width (docs/ZOO.md 3m, 3o, 3p).

    python tools/train_vit_variant.py OUT [--heads 8] [--depth 12] [--patch 4] [--width 128]
        [--seed 1] [--domain 1] [--steps 14000] [--models ...]

Everything else is the bundled recipe: the masked-patch backbone (``vit-mim``, 5,000 steps),
the plain fine-tunes ``vit-cls`` and ``vit-gap`` from it, and the supervised-only ``vit-sup``,
each as ``python -m vitlens.zoo.train`` trains it, on one thread. ``--seed`` trains a
replicate of the same shape (the backbone's init, crops and masks, and each classifier's
init and data order; docs/ZOO.md 3i, 3s). ``--domain`` trains and tests the classifiers on
another domain of the synthetic set (docs/ZOO.md 3t, 3u: the harder domain 1); a fine-tune
still starts from its bundled backbone unless OUT holds one. ``--steps`` gives every listed
model a longer (or shorter) schedule: the same warmup fraction and cosine decay over the new
step count (docs/ZOO.md 3w); the card records the steps. Weights and cards go to OUT;
the bundled zoo is not touched. Measure them with ``tools/fig5_head_order.py ... --heads N``
or, for every finding, ``tools/variant_findings.py OUT --heads N --depth D``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VIT_ARCHES = ("vit-cls", "vit-gap", "vit-mim", "vit-noskip")


def set_shape(heads: int | None = None, depth: int | None = None,
              patch: int | None = None, width: int | None = None) -> dict[str, dict]:
    """Change the zoo's ViT architectures in this process (the bundled files are untouched);
    returns their previous keyword arguments."""
    from vitlens.zoo import architectures

    # vit-noskip shares vit-cls's kwargs dict: take every copy before changing any
    before = {arch: dict(architectures.ARCHITECTURES[arch]["kwargs"]) for arch in VIT_ARCHES}
    for arch in VIT_ARCHES:
        kwargs = architectures.ARCHITECTURES[arch]["kwargs"]
        for key, value in (("num_heads", heads), ("depth", depth), ("patch_size", patch),
                           ("embed_dim", width)):
            if value is not None:
                kwargs[key] = value
    return before


@contextmanager
def shaped(heads: int | None = None, depth: int | None = None,
           patch: int | None = None, width: int | None = None) -> Iterator[None]:
    """:func:`set_shape` for the duration of a ``with`` block only."""
    from vitlens.zoo import architectures

    before = set_shape(heads, depth, patch, width)
    try:
        yield
    finally:
        for arch, kwargs in before.items():
            architectures.ARCHITECTURES[arch]["kwargs"].clear()
            architectures.ARCHITECTURES[arch]["kwargs"].update(kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--patch", type=int, help="patch size (64 px images)")
    parser.add_argument("--width", type=int, help="embedding width (the zoo's is 64)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (0: the bundled run)")
    parser.add_argument("--domain", type=int, help="synthetic domain of the classifiers' "
                        "training and test images (the zoo's: 0)")
    parser.add_argument("--steps", type=int, help="training steps of every listed model "
                        "(default: each model's recipe)")
    parser.add_argument("--models", nargs="+", default=["vit-mim", "vit-cls", "vit-gap", "vit-sup"])
    args = parser.parse_args()
    import torch

    from vitlens.zoo import train

    torch.set_num_threads(1)
    set_shape(args.heads, args.depth, args.patch, args.width)
    train.DEFAULTS["seed"] = args.seed  # every model's, the backbone's too
    from vitlens.zoo._specs import SPECS

    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be positive, got {args.steps}")
        for name in args.models:
            SPECS[name]["steps"] = args.steps
    if args.domain is not None:
        for name in args.models:
            if SPECS[name]["objective"] != "classify":
                parser.error(f"--domain applies to classifiers, not {name}")
            SPECS[name]["domain"] = args.domain
    t0 = time.time()
    for name in args.models:
        card = train.train_model(name, out=args.out, progress=False)
        score = card.get("test_accuracy", card.get("test_loss"))
        print(name, score, f"{(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
