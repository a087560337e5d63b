"""Fig 2's top-third statistic with the shared class decision taken out (docs/ZOO.md 3u).

    python tools/fig2_class_removed.py [--vit WEIGHTS] [--resnet WEIGHTS] [--domain 0]

For every capture point of ``vit-cls`` and ``resnet`` (``layers="all"``, all tokens
flattened, as the finding uses) on ``vitlens reproduce``'s 512 synthetic test images: the
centred Gram matrix over the images in float64, then

- its linear CKA with the one-hot class labels (how class-dominated the layer is);
- Fig 2's statistic (best-match CKA with the ResNet: the ViT's lower two thirds minus its top
  third), first as is and then with every Gram projected off the span of the 10 class
  indicators (which holds the constant): the class means are removed from each
  representation, so a match made of the shared 10-class decision cannot count.

This is full-batch (biased) linear CKA (Kornblith et al. 2019), written here independently of
vitlens's minibatch estimator; the unprojected statistic is to be compared with the finding's.
Random-init copies of both architectures (seeds 0-2, built by name as ``vitlens reproduce``
builds them) are measured the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def grams(model, x, chunk: int = 4) -> tuple[list[str], np.ndarray]:
    """(layer names, (L, n, n) float64 Gram matrices of the flattened representations)."""
    import torch

    from vitlens.capture.activations import capture_layers
    from vitlens.models import layer_catalog

    names = layer_catalog(model).select("all")
    out = []
    with torch.no_grad():
        for i in range(0, len(names), chunk):
            acts = capture_layers(model, x, names[i : i + chunk], token_mode="flatten")
            for name in names[i : i + chunk]:
                a = acts[name].reshape(len(x), -1).double().numpy()
                out.append(a @ a.T)
    return names, np.stack(out)


def project(k: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """P K P for each Gram, with P the projection off the column span of ``basis``."""
    q, _ = np.linalg.qr(basis)
    p = np.eye(len(basis)) - q @ q.T
    return p @ k @ p


def cka_matrix(ka: np.ndarray, kb: np.ndarray) -> np.ndarray:
    """(La, Lb) linear CKA between already centred Gram stacks."""
    na = np.sqrt(np.einsum("lij,lij->l", ka, ka))
    nb = np.sqrt(np.einsum("lij,lij->l", kb, kb))
    return np.einsum("aij,bij->ab", ka, kb) / np.outer(na, nb)


def top_third(cross: np.ndarray) -> tuple[float, float, float]:
    """(lower two thirds - top third, lower two thirds, top third) of the best-match CKA."""
    best = cross.max(axis=1)
    cut = len(best) - max(1, len(best) // 3)
    return best[:cut].mean() - best[cut:].mean(), best[:cut].mean(), best[cut:].mean()


def measure(vit, resnet, x, y) -> dict[str, float]:
    n = len(y)
    onehot = np.eye(int(y.max()) + 1)[y]
    centre = np.ones((n, 1))
    names_v, kv = grams(vit, x)
    names_r, kr = grams(resnet, x)
    kv_c, kr_c = project(kv, centre), project(kr, centre)
    label = project((onehot @ onehot.T)[None], centre)
    lab_v = cka_matrix(kv_c, label)[:, 0]
    lab_r = cka_matrix(kr_c, label)[:, 0]
    stat, low2, top = top_third(cka_matrix(kv_c, kr_c))
    stat_res, low2_res, top_res = top_third(cka_matrix(project(kv, onehot), project(kr, onehot)))
    cut_v = len(names_v) - max(1, len(names_v) // 3)
    cut_r = len(names_r) - max(1, len(names_r) // 3)
    return {
        "statistic": stat, "lower two thirds": low2, "top third": top,
        "statistic, class means removed": stat_res,
        "lower two thirds, class means removed": low2_res,
        "top third, class means removed": top_res,
        "label CKA, ViT lower two thirds": lab_v[:cut_v].mean(),
        "label CKA, ViT top third": lab_v[cut_v:].mean(),
        "label CKA, ResNet lower two thirds": lab_r[:cut_r].mean(),
        "label CKA, ResNet top third": lab_r[cut_r:].mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vit", type=Path, help="vit-cls weights (default: bundled)")
    parser.add_argument("--resnet", type=Path, help="resnet weights (default: bundled)")
    parser.add_argument("--domain", type=int, default=0)
    parser.add_argument("--n", type=int, default=512)
    args = parser.parse_args()
    import torch

    from vitlens.datasets import synthetic
    from vitlens.findings.controls import CONTROL_SEEDS, random_init
    from vitlens.zoo import registry
    from vitlens.zoo.train import _to_input

    torch.set_num_threads(1)
    images, y = synthetic("test", args.n, seed=0, domain=args.domain).arrays()
    x = _to_input(images, torch.device("cpu"))
    rows = {"trained": measure(registry.load("vit-cls", args.vit),
                               registry.load("resnet", args.resnet), x, y)}
    for seed in CONTROL_SEEDS:
        rows[f"random init {seed}"] = measure(random_init("vitlens/vit-cls", seed),
                                              random_init("vitlens/resnet", seed), x, y)
    print("| quantity | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in rows["trained"]:
        print(f"| {key} | " + " | ".join(f"{r[key]:.3f}" for r in rows.values()) + " |")


if __name__ == "__main__":
    main()
