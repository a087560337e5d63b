"""Cost of the analyses of vitlens.analyses (attention, distance, head subsets, ERF, residual).

Seconds per 100 images on CPU, for a zoo ViT (``vitlens/vit-cls``: its trained weights when
they exist, else a random-init model of the same config) and for a random-init ViT-B/16
(``vit_base_patch16_224``), with the overhead of attention capture and of the ERF measured
against a plain forward pass of the same images and batch size (ratio).

Images are preprocessed random tensors (so image decoding and resizing are not timed).
Each analysis is timed right after a plain forward pass of the same images and batch size
(ERF: the ERF images and batch size), in interleaved rounds; the tables give the minimum
seconds over rounds and the median of the paired ratios (robust to other jobs on a shared
CPU). One torch thread by default: on an oversubscribed machine OpenMP threads spin.

    python benchmarks/analyses_cost.py --out benchmarks/_out/analyses_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch


def _zoo_vit():
    import vitlens
    from vitlens.errors import WeightsUnavailableError

    try:
        return vitlens.load_model("vitlens/vit-cls"), "vitlens/vit-cls (trained weights)"
    except (WeightsUnavailableError, FileNotFoundError, OSError):
        from vitlens.zoo.registry import create

        return create("vit-cls").eval(), "vitlens/vit-cls config (random init)"


def _zoo_cnn():
    import vitlens
    from vitlens.errors import WeightsUnavailableError

    try:
        return vitlens.load_model("vitlens/resnet")
    except (WeightsUnavailableError, FileNotFoundError, OSError):
        from vitlens.zoo.registry import create

        return create("resnet").eval()


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_model(label: str, vit: torch.nn.Module, cnn: torch.nn.Module, n: int, n_erf: int,
                batch_size: int, erf_batch: int, repeats: int) -> dict:
    """Time every analysis, each paired with a plain forward pass timed right before it.

    Rounds interleave all analyses. On a shared CPU the least disturbed run is the best
    estimate of the cost, so seconds are the minimum over rounds; the ratio is the median
    over rounds of (analysis / its paired forward pass).
    """
    from vitlens.analyses import (
        AttentionCapture,
        attention_distance,
        effective_receptive_field,
        head_subset_cka,
        residual_ratio,
    )

    size = vit.patch_embed.img_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, *size, generator=g)
    xe = x[:n_erf]
    batches = [x[i:i + batch_size] for i in range(0, n, batch_size)]
    ebatches = [xe[i:i + erf_batch] for i in range(0, n_erf, erf_batch)]

    def forward(bs=batches):
        with torch.no_grad():
            for b in bs:
                vit(b)

    def forward_erf():
        forward(ebatches)

    def forward_backward():  # a plain forward + one backward to the input
        for b in ebatches:
            b = b.clone().requires_grad_(True)
            vit(b).sum().backward()

    def capture_maps():
        with torch.no_grad(), AttentionCapture(vit) as cap:
            for b in batches:
                vit(b)
                cap.collect()

    kw = dict(progress=False, device="cpu")
    tasks = {  # name: (function, images, reference forward, its images)
        "forward": (forward, n, forward, n),
        "attention capture (maps kept, full forward)": (capture_maps, n, forward, n),
        "attention_distance": (lambda: attention_distance(vit, x, batch_size=batch_size, **kw),
                               n, forward, n),
        "residual_ratio": (lambda: residual_ratio(vit, x, batch_size=batch_size, **kw), n,
                           forward, n),
        "head_subset_cka (vs CNN, 2 passes)": (lambda: head_subset_cka(
            vit, cnn, x, batch_size=max(batch_size, 4), **kw), n, forward, n),
        "forward + backward to input": (forward_backward, n_erf, forward_erf, n_erf),
        "effective_receptive_field (after, every block)": (lambda: effective_receptive_field(
            vit, xe, batch_size=erf_batch, **kw), n_erf, forward_erf, n_erf),
        "effective_receptive_field (both)": (lambda: effective_receptive_field(
            vit, xe, where="both", batch_size=erf_batch, **kw), n_erf, forward_erf, n_erf),
    }
    forward(batches[:1])  # warm-up
    per100: dict[str, list[float]] = {k: [] for k in tasks}
    ref100: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(repeats):
        for name, (fn, m, ref, m_ref) in tasks.items():
            ref100[name].append(100 * _time(ref) / m_ref)
            per100[name].append(100 * _time(fn) / m)
    return {"model": label, "n_images": n, "n_images_erf": n_erf, "batch_size": batch_size,
            "erf_batch_size": erf_batch, "depth": len(vit.blocks), "repeats": repeats,
            "seconds_per_100_images": {k: min(v) for k, v in per100.items()},
            "ratio_to_forward": {k: statistics.median(a / b for a, b in zip(v, ref100[k],
                                                                            strict=True))
                                 for k, v in per100.items()},
            "raw_seconds_per_100_images": per100, "raw_forward_seconds_per_100_images": ref100}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--n-zoo", type=int, default=256, help="images for the zoo ViT")
    p.add_argument("--n-zoo-erf", type=int, default=64, help="ERF images for the zoo ViT")
    p.add_argument("--n-base", type=int, default=8, help="images for ViT-B/16")
    p.add_argument("--n-base-erf", type=int, default=2, help="ERF images for ViT-B/16")
    p.add_argument("--repeats", type=int, default=7, help="rounds for the zoo ViT")
    p.add_argument("--repeats-base", type=int, default=3, help="rounds for ViT-B/16")
    p.add_argument("--skip-base", action="store_true", help="only the zoo ViT")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vit, label = _zoo_vit()
    results = [bench_model(label, vit, _zoo_cnn(), args.n_zoo, args.n_zoo_erf, 32, 8,
                           args.repeats)]
    if not args.skip_base:
        import timm

        base = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
        r50 = timm.create_model("resnet50", pretrained=False).eval()
        results.append(bench_model("vit_base_patch16_224 (random init)", base, r50,
                                   args.n_base, args.n_base_erf, 8, 2, args.repeats_base))
    report = {"threads": args.threads, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "results": results}
    for r in results:
        print(f"\n{r['model']}: {r['n_images']} images (ERF: {r['n_images_erf']}), "
              f"batch {r['batch_size']} (ERF: {r['erf_batch_size']})")
        print(f"| {'analysis':48s} | s / 100 images | x forward |")
        print(f"|{'-' * 50}|{'-' * 16}:|{'-' * 10}:|")
        for k, v in r["seconds_per_100_images"].items():
            print(f"| {k:48s} | {v:14.2f} | {r['ratio_to_forward'][k]:9.2f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
