"""Fig 5's statistic on blocks 0-2 of one ViT file: the zoo log's table in docs/ZOO.md 3m.

    python tools/fig5_head_order.py vit-cls bundled
    python tools/fig5_head_order.py vit-cls /tmp/zoo-verify/weights/vit-cls.safetensors
    python tools/fig5_head_order.py vit-cls random
    python tools/fig5_head_order.py vit-cls FILE --heads 8   # a variant trained with 8 heads
    python tools/fig5_head_order.py vit-cls random --patch 4  # a random-init 16x16-grid ViT

For each block: the heads sorted from local to global (mean distance, px), their local
attention ratios, each head's CKA with vitlens/resnet's stem and first third of its blocks
(averaged over those layers), Spearman's rho of distance and CKA, and the most local head's
CKA minus the most global's; and, with the same ResNet layers, the CKA of the block's input
(``blocks.<b>.norm1``, all tokens flattened) and of its whole attention branch
(``blocks.<b>.attn``): a head can only be as ResNet-like as what it mixes. On 512 synthetic
test images. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_vit_variant import set_shape  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="zoo architecture name, e.g. vit-cls")
    p.add_argument("weights", help="'bundled', 'random' or a safetensors file")
    p.add_argument("--heads", type=int, default=None, help="attention heads of a variant")
    p.add_argument("--depth", type=int, default=None, help="blocks of a variant")
    p.add_argument("--patch", type=int, default=None, help="patch size of a variant")
    p.add_argument("--width", type=int, default=None, help="embedding width of a variant")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="init seed of a 'random' model")
    args = p.parse_args()

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    import vitlens
    from vitlens.analyses import attention_distance, attention_locality, head_subset_cka
    from vitlens.datasets import synthetic
    from vitlens.zoo import registry

    torch.set_num_threads(args.threads)
    set_shape(args.heads, args.depth, args.patch, args.width)  # a variant (tools/train_vit_variant.py)
    if args.weights == "bundled":
        model = vitlens.load_model(f"vitlens/{args.name}")
    elif args.weights == "random":
        torch.manual_seed(args.seed)
        model = registry.create(args.name).eval()
    else:
        model = registry.load(args.name, args.weights)
    images = synthetic("test", 512)
    dist = attention_distance(model, images, batch_size=128, progress=False)
    loc = attention_locality(model, images, batch_size=128, progress=False)
    resnet = vitlens.load_model("vitlens/resnet")
    out = {"model": args.name, "weights": args.weights,
           "block_max_local": np.round(loc.local_ratio.max(1), 2).tolist(),
           "local_heads_ge2": (loc.local_ratio >= 2).sum(1).tolist(),
           "distance_by_block": np.round(dist.distance.mean(1), 1).tolist()}
    layers = [f"blocks.{b}.{part}" for b in (0, 1, 2) for part in ("norm1", "attn")]
    early = None
    for b in (0, 1, 2):
        hs = head_subset_cka(model, resnet, images, block=b, head_distances=dist,
                             subset_size=1, batch_size=128, progress=False)
        if early is None:  # the same ResNet layers as the heads' CKA
            early = vitlens.cka(model, images, resnet, layers_a=layers, layers_b=hs.cnn_layers,
                                batch_size=128, progress=False, cache=False)
            early = np.asarray(early.matrix, np.float64).mean(axis=1)
        cka = np.nanmean(np.asarray(hs.cka, np.float64), axis=1)
        sd = np.asarray(hs.subset_distance)
        out[f"block{b}"] = {"distance": np.round(sd, 1).tolist(),
                            "local_ratio": np.round(loc.local_ratio[b][hs.subsets[:, 0]], 2).tolist(),
                            "cka": np.round(cka, 3).tolist(),
                            "rho": round(float(spearmanr(sd, cka).statistic), 2),
                            "drop": round(float(cka[sd.argmin()] - cka[sd.argmax()]), 3),
                            "input_cka": round(float(early[layers.index(f"blocks.{b}.norm1")]), 3),
                            "attn_cka": round(float(early[layers.index(f"blocks.{b}.attn")]), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
