"""Every sharded analysis on a small random-init zoo pair (used by tests/test_distributed.py).

``python -m torch.distributed.run --nproc-per-node 2 tests/_dist_analyses.py OUT_DIR`` runs them
on 2 ranks; rank 0 saves each result as ``OUT_DIR/<name>.npz``. The test calls
:func:`run_all` in its own process (no process group) and compares the two.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

N_IMAGES, BATCH = 40, 8  # 5 batches: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3


def run_all(out: Path) -> tuple[list[str], int]:
    """Run the analyses; on rank 0 (or alone) save each result.

    Returns:
        The results' names, and the number of images the three models were run on.
    """
    import vitlens
    from vitlens import analyses as va
    from vitlens import distributed as vd
    from vitlens.zoo import registry

    torch.manual_seed(0)
    vit = registry.create("vit-cls").eval()
    torch.manual_seed(1)
    cnn = registry.create("resnet").eval()
    torch.manual_seed(2)
    vit2 = registry.create("vit-cls").eval()
    seen = []
    for m in (vit, cnn, vit2):
        m.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    images = vitlens.datasets.synthetic("test", N_IMAGES)
    train = vitlens.datasets.synthetic("train", 100)
    kw = {"batch_size": BATCH, "progress": False}
    results = {
        "attention_distance": va.attention_distance(vit, images, **kw),
        "erf": va.effective_receptive_field(cnn, images, layers=["stages.0.blocks.0", "stages.1.blocks.1"],
                                            where="both", n_images=16, batch_size=4,
                                            progress=False),
        "residual": va.residual_ratio(vit, images, **kw),
        "head_subsets": va.head_subset_cka(vit, cnn, images, block=1, **kw),
        "localization": va.localization(vit, images, layer="blocks.2", **kw),
        "probes": va.linear_probe(vit, train, None, images, None, layers=["blocks.1", "blocks.3"],
                                  shots=1, seeds=(0, 1), **kw),
        "confidence": va.cka_with_confidence(vit, images, cnn, repeats=2, permutations=1,
                                             **kw),
        "finetune": va.finetune_similarity(vit, vit2, {"test": images}, **kw),
    }
    if vd.is_main():
        out.mkdir(parents=True, exist_ok=True)
        for name, res in results.items():
            res.save(out / f"{name}.npz")
    return list(results), sum(seen)


def main(out: Path) -> None:
    from vitlens import distributed as vd

    assert vd.init_from_env(), "expected torchrun's environment"
    out.mkdir(parents=True, exist_ok=True)
    names, seen = run_all(out)
    (out / f"rank{vd.rank()}.json").write_text(json.dumps(
        {"pid": os.getpid(), "rank": vd.rank(), "world": vd.world(), "names": names,
         "images_seen": seen}))
    vd.destroy()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
