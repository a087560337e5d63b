"""One rank of the distributed tests (launched by torchrun from tests/test_distributed.py).

Usage: python -m torch.distributed.run --nproc-per-node N tests/_dist_worker.py OUT_DIR
Writes OUT_DIR/rank{r}.json (pid, world, forward passes, helper checks) and, on rank 0,
OUT_DIR/matrix.npy (uncached run) and OUT_DIR/matrix_cached.npy (cached run).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import ForwardCounter  # noqa: E402

import vitlens  # noqa: E402
from vitlens import distributed as vd  # noqa: E402
from vitlens.zoo import registry  # noqa: E402

N_IMAGES, BATCH = 40, 8  # 5 batches: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3


def zoo_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    vit = registry.create("vit-cls").eval()
    torch.manual_seed(1)
    cnn = registry.create("resnet").eval()
    return vit, cnn


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N_IMAGES, 64, 64, 3), dtype=np.uint8)


def main(out: Path) -> None:
    assert vd.init_from_env(), "expected torchrun's environment"
    r, w = vd.rank(), vd.world()
    vit, cnn = zoo_pair()
    calls = ForwardCounter(vit)  # not a hook: a user's hook turns the cache off
    res = vitlens.cka(vit, images(), cnn, layers_a="all", batch_size=BATCH, progress=False,
                      cache=False)
    forwards = calls.n
    cached = vitlens.cka(vit, images(), cnn, layers_a="all", batch_size=BATCH,
                         progress=False, cache=True)
    again = vitlens.cka(vit, images(), cnn, layers_a="all", batch_size=BATCH,
                        progress=False, cache=True)
    solo_forwards = None
    if r == 0:  # one rank alone, inside the distributed job: no collective, all batches
        before = calls.n
        solo = vitlens.cka(vit, images(), cnn, layers_a="all", batch_size=BATCH,
                           progress=False, cache=False, distributed=False)
        solo_forwards = calls.n - before
        np.save(out / "matrix_solo.npy", solo.matrix)
    vd.barrier()
    calls.close()
    # the generic helpers, with rank-dependent values
    state = {"sum": torch.full((2, 3), float(r + 1), dtype=torch.float64),
             "count": r + 10, "mean": 0.5 * r, "nested": {"t": torch.tensor([r, 2 * r])},
             "name": f"rank{r}", "flag": True}
    reduced = vd.all_reduce_state_(state)
    t = torch.tensor([1.0 + r], dtype=torch.float64)
    vd.all_reduce_sum_(t)
    record = {
        "pid": os.getpid(), "rank": r, "world": w, "forwards": forwards,
        "forwards_cached": calls.n - forwards - (solo_forwards or 0),
        "solo_forwards": solo_forwards, "is_main": vd.is_main(),
        "shard": [[b.start, b.stop] for b in vd.shard(vitlens.datasets.balanced_batches(
            N_IMAGES, BATCH))],
        "sum": reduced["sum"].tolist(), "count": reduced["count"], "mean": reduced["mean"],
        "nested": reduced["nested"]["t"].tolist(), "name": reduced["name"],
        "flag": reduced["flag"], "input_sum_after": state["sum"][0, 0].item(), "t": t.item(),
        "broadcast": vd.broadcast_object(f"from {r}"),
        "cached_equal": bool(np.array_equal(cached.matrix, res.matrix)),
        "again_equal": bool(np.array_equal(again.matrix, cached.matrix)),
    }
    (out / f"rank{r}.json").write_text(json.dumps(record))
    if vd.is_main():
        np.save(out / "matrix.npy", res.matrix)
        np.save(out / "matrix_cached.npy", cached.matrix)
    vd.destroy()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
