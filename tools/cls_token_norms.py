"""What the CLS token carries into each block, against the spatial tokens (docs/ZOO.md 3v).

    python tools/cls_token_norms.py [NAME ...]

For each block of a zoo ViT (default ``vit-cls``) and of random-init copies (seeds 0-2), over
512 synthetic test images: the mean norm of the block's input token z and of its attention
branch's output f(z) = attn(norm1(z)), for the CLS token and averaged over the spatial tokens,
and their ratio ||z|| / ||f(z)|| (Fig 7/E.1's quantity for the attention sub-block, here the
ratio of mean norms). Recomputed from the block's own modules, in float64.
"""

from __future__ import annotations

import sys

import numpy as np


def block_norms(model, x) -> np.ndarray:
    """(blocks, 4): mean ||z|| CLS, mean ||z|| spatial, mean ||f(z)|| CLS, spatial."""
    import torch

    rows = []

    def hook(block, inputs, _output):
        z = inputs[0].double()
        with torch.no_grad():
            f = block.ls1(block.attn(block.norm1(inputs[0]))).double()
        zn, fn = z.norm(dim=-1).mean(0), f.norm(dim=-1).mean(0)
        rows.append([zn[0].item(), zn[1:].mean().item(), fn[0].item(), fn[1:].mean().item()])

    handles = [b.register_forward_hook(hook) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return np.array(rows)


def main(names: list[str]) -> None:
    import torch

    from vitlens.datasets import synthetic
    from vitlens.findings.controls import CONTROL_SEEDS, random_init
    from vitlens.zoo import registry
    from vitlens.zoo.train import _to_input

    torch.set_num_threads(1)
    images, _ = synthetic("test", 512, seed=0).arrays()
    x = _to_input(images, torch.device("cpu"))
    models = {n: registry.load(n) for n in names or ["vit-cls"]}
    for seed in CONTROL_SEEDS:
        models[f"random init {seed}"] = random_init(f"vitlens/{next(iter(names or ['vit-cls']))}", seed)
    print("| model | block | ‖z‖ CLS | ‖z‖ spatial | ‖f(z)‖ CLS | ‖f(z)‖ spatial "
          "| ratio CLS | ratio spatial |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        for b, (zc, zs, fc, fs) in enumerate(block_norms(model.eval(), x)):
            print(f"| {name} | {b} | {zc:.2f} | {zs:.2f} | {fc:.2f} | {fs:.2f} | "
                  f"{zc / fc:.2f} | {zs / fs:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
