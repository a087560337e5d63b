"""What the CLS token carries into each block, against the spatial tokens (docs/ZOO.md 3v).

    python tools/cls_token_norms.py [NAME ...]

For each block of a zoo ViT (default ``vit-cls``) and of random-init copies (seeds 0-2), over
512 synthetic test images, for each of its two sub-blocks (attention: z is the block's input
and f(z) = attn(norm1(z)); MLP: z is the stream after the attention add and f(z) =
mlp(norm2(z))): the mean norm of z and of f(z), for the CLS token and averaged over the
spatial tokens, and their ratio ||z|| / ||f(z)|| (Fig 7/E.1's quantity, here the ratio of mean
norms). Recomputed from the block's own modules, in float64.
"""

from __future__ import annotations

import sys


def block_norms(model, x) -> list[tuple[int, str, list[float]]]:
    """(block, sub-block, [mean ||z|| CLS, spatial, mean ||f(z)|| CLS, spatial]) rows."""
    import torch

    rows = []

    def norms(z, f):
        zn, fn = z.double().norm(dim=-1).mean(0), f.double().norm(dim=-1).mean(0)
        return [zn[0].item(), zn[1:].mean().item(), fn[0].item(), fn[1:].mean().item()]

    def hook(block, inputs, _output):
        z = inputs[0]
        with torch.no_grad():
            fa = block.ls1(block.attn(block.norm1(z)))
            fm = block.ls2(block.mlp(block.norm2(z + fa)))
        b = len(rows) // 2
        rows.extend([(b, "attn", norms(z, fa)), (b, "mlp", norms(z + fa, fm))])

    handles = [b.register_forward_hook(hook) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return rows


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
    print("| model | block | sub-block | ‖z‖ CLS | ‖z‖ spatial | ‖f(z)‖ CLS | ‖f(z)‖ spatial "
          "| ratio CLS | ratio spatial |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        for b, part, (zc, zs, fc, fs) in block_norms(model.eval(), x):
            print(f"| {name} | {b} | {part} | {zc:.2f} | {zs:.2f} | {fc:.2f} | {fs:.2f} | "
                  f"{zc / fc:.2f} | {zs / fs:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
