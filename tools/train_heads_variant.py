"""Train the zoo's ViT recipe with another number of attention heads (docs/ZOO.md 3m).

    python tools/train_heads_variant.py 8 /tmp/heads8

Everything else is the bundled recipe: the masked-patch backbone (``vit-mim``, 5,000 steps),
the plain fine-tune ``vit-cls`` from it, and the supervised-only ``vit-sup``, each as
``python -m vitlens.zoo.train`` trains it, on one thread. Weights and cards go to OUT; the
bundled zoo is not touched. Measure them with ``tools/fig5_head_order.py ... --heads N``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    heads, out = int(sys.argv[1]), Path(sys.argv[2])
    import torch

    from vitlens.zoo import architectures, train

    torch.set_num_threads(1)
    for arch in ("vit-cls", "vit-gap", "vit-mim", "vit-noskip"):
        architectures.ARCHITECTURES[arch]["kwargs"]["num_heads"] = heads
    t0 = time.time()
    for name in ("vit-mim", "vit-cls", "vit-sup"):
        card = train.train_model(name, out=out, progress=False)
        print(name, card.get("test_accuracy"), f"{(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
