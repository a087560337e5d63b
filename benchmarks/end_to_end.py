"""Benchmark: end-to-end ``vitlens.cka`` against the bare forward passes, memory, torchrun.

Run from the repository root (results and commands in benchmarks/README.md, "End to end"):

    python benchmarks/end_to_end.py ratio --pair vitb16-r50 --density blocks --batch-sizes 64
    python benchmarks/end_to_end.py ratio --pair zoo --density paper --batch-sizes 64,128,256
    python benchmarks/end_to_end.py profile --pair vitb16-r50 --batch-sizes 64 --repeats 1
    python benchmarks/end_to_end.py precision --pair vitb16-r50 --n 64
    python benchmarks/end_to_end.py memory --pair zoo --images 512,4096
    python benchmarks/end_to_end.py dist --pair zoo --n 2048
    (add --quick to any for a smoke run)

Pairs: ``vitb16-r50`` is ``vit_base_patch16_224`` against ``resnetv2_50x1_bit`` (BiT R50x1,
the paper's ResNet), random init, 224 x 224; ``zoo`` is the bundled zoo's ``vit-cls``
against ``resnet`` (64 x 64; trained weights when present, else random init). Images are
uint8 noise, preprocessed by each model's own timm transform as in a real run. Densities:
``blocks`` (block outputs) or ``paper`` (every capture point, about 6 per ViT block).

``ratio`` times ``vitlens.cka(..., cache=False)`` (preprocessing, hooks, Grams, float64
accumulation) and the bare forward passes of both models on the preprocessed images, in
alternation, ``--repeats`` times, and reports the median of the paired ratios of CPU time
(one thread: robust to other processes on a shared machine) and of wall time. It also
times the Gram work alone (the engine's own per-layer routine on random features of the
same widths): ``(bare + gram) / bare`` is the floor that exact flatten-mode CKA cannot beat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import vitlens  # noqa: E402
from vitlens.datasets import MultiModelBatches, as_images, balanced_batches  # noqa: E402


def load_pair(pair: str) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """(model A, model B, image size), deterministic."""
    if pair == "vitb16-r50":
        import timm

        torch.manual_seed(0)
        vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
        torch.manual_seed(1)
        cnn = timm.create_model("resnetv2_50x1_bit", pretrained=False).eval()
        return vit, cnn, 224
    from vitlens.zoo import registry

    out = []
    for seed, name in enumerate(("vit-cls", "resnet")):
        try:
            out.append(vitlens.load_model(f"vitlens/{name}"))
        except Exception:  # weights not bundled yet: the same architecture, random init
            torch.manual_seed(seed)
            out.append(registry.create(name).eval())
    return out[0], out[1], 64


def noise_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). With one thread on a shared machine the
    CPU time leaves out the time other processes had the core."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _gram_seconds(widths: list[int], n: int, repeats: int = 3, cpu: bool = False) -> float:
    """The engine's Gram route alone on random (n, d) features: one pass over the layers,
    each timed once (cold, as in a real run), summed; the median of ``repeats`` passes."""
    from vitlens.similarity._engine import _gram_rows, _triu

    iu = _triu(n, torch.device("cpu"), {})
    totals = []
    for _ in range(repeats):
        total = 0.0
        for d in widths:
            x = torch.randn(n, d)
            wall_s, cpu_s = _timed(lambda x=x: _gram_rows([x], torch.float32, str, iu))
            total += cpu_s if cpu else wall_s
            del x
        totals.append(total)
    return statistics.median(totals)


def _widths(model: torch.nn.Module, layers: str, size: int) -> list[int]:
    from vitlens.capture import Capture

    with Capture(model, layers, token_mode="flatten", check_finite=False) as cap:
        feats = cap.run(torch.zeros(1, 3, size, size))
    return [int(t.shape[1]) for t in feats.values()]


def bench_ratio(args: argparse.Namespace) -> list[dict]:
    vit, cnn, size = load_pair(args.pair)
    layers = "blocks" if args.density == "blocks" else "all"
    wa, wb = _widths(vit, layers, size), _widths(cnn, layers, size)
    rows = []
    for bs in args.batch_sizes:
        n = bs * args.batches
        imgs = noise_images(n, size)
        batches = balanced_batches(n, bs)
        stream = MultiModelBatches(as_images(imgs), [vit, cnn], batches)
        xs = [stream.load(b) for b in batches]  # the same preprocessed images

        def bare(xs=xs) -> None:
            with torch.no_grad():
                for xa, xb in xs:
                    vit(xa)
                    cnn(xb)

        def e2e(imgs=imgs, bs=bs) -> None:
            vitlens.cka(vit, imgs, cnn, layers_a=layers, layers_b=layers, batch_size=bs,
                        progress=False, cache=False, precision=args.precision)

        with torch.no_grad():  # warm-up (one-time kernel selection), small batch
            vit(xs[0][0][:8])
            cnn(xs[0][1][:8])
        vitlens.cka(vit, imgs[:8], cnn, layers_a=layers, layers_b=layers, batch_size=8,
                    progress=False, cache=False, precision=args.precision)
        bare_t, e2e_t = [], []
        for _ in range(args.repeats):  # alternate, so load drift hits both alike
            bare_t.append(_timed(bare))
            e2e_t.append(_timed(e2e))
        cpu = [e[1] / b[1] for b, e in zip(bare_t, e2e_t, strict=True)]
        wall = [e[0] / b[0] for b, e in zip(bare_t, e2e_t, strict=True)]
        gram = (_gram_seconds(wa + wb, bs, cpu=True) * len(batches) if not args.no_floor
                else float("nan"))
        bare_cpu = statistics.median(b[1] for b in bare_t)
        row = {"pair": args.pair, "density": args.density, "layers": [len(wa), len(wb)],
               "batch_size": bs, "n_images": n, "precision": args.precision,
               "threads": torch.get_num_threads(), "bare": bare_t, "e2e": e2e_t,
               "ratio_cpu": statistics.median(cpu), "ratios_cpu": cpu,
               "ratio_wall": statistics.median(wall), "ratios_wall": wall,
               "gram_cpu_s": gram, "floor": (bare_cpu + gram) / bare_cpu,
               "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"| {args.pair} | {args.density} ({len(wa)}x{len(wb)}) | {bs} | {n} | "
              f"{bare_cpu:.1f} | {statistics.median(e[1] for e in e2e_t):.1f} | "
              f"**{row['ratio_cpu']:.3f}** ({', '.join(f'{r:.3f}' for r in cpu)}) | "
              f"{row['ratio_wall']:.3f} | {row['floor']:.3f} | {row['load']:.1f} |",
              flush=True)
    return rows


def bench_precision(args: argparse.Namespace) -> list[dict]:
    vit, cnn, size = load_pair(args.pair)
    imgs = noise_images(args.n, size)
    out = {}
    for prec in ("float32", "bfloat16", "auto"):
        kw = dict(layers_a="blocks", layers_b="blocks", batch_size=args.batch_size,
                  progress=False, cache=False)
        t = time.perf_counter()
        res = vitlens.cka(vit, imgs, cnn, precision=prec, **kw)
        out[prec] = (time.perf_counter() - t, res)
    ref = out["float32"][1].matrix
    rows = []
    for prec, (sec, res) in out.items():
        diff = float(np.nanmax(np.abs(res.matrix - ref)))
        rows.append({"pair": args.pair, "precision": prec, "seconds": sec, "max_abs_diff": diff,
                     "note": res.meta.get("precision", "float32"), "n": args.n})
        print(f"| {args.pair} | {prec} | {sec:.1f} | {diff:.1e} | "
              f"{res.meta.get('precision', 'float32')} |", flush=True)
    return rows


def bench_profile(args: argparse.Namespace) -> list[dict]:
    """Where an end-to-end run spends its CPU time: image loading and preprocessing, the
    forward passes (hooks included), the Gram work done inside the hooks, the float64
    accumulation, and the rest; next to the bare forward passes of the same images."""
    from vitlens.capture import gram as _gram_capture
    from vitlens.datasets import preprocess
    from vitlens.similarity import MinibatchCKA

    vit, cnn, size = load_pair(args.pair)
    layers = "blocks" if args.density == "blocks" else "all"
    bs = args.batch_sizes[0]
    n = bs * args.batches
    imgs = noise_images(n, size)
    spent = dict.fromkeys(("load", "forward+hooks", "grams", "accumulate"), 0.0)

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - t
        return wrapper

    preprocess.MultiModelBatches.load = timed("load", preprocess.MultiModelBatches.load)
    _gram_capture.GramCapture._reduce = timed("grams", _gram_capture.GramCapture._reduce)
    _gram_capture.GramCapture.run = timed("forward+hooks", _gram_capture.GramCapture.run)
    MinibatchCKA.update_grams = timed("accumulate", MinibatchCKA.update_grams)
    batches = balanced_batches(n, bs)
    stream = MultiModelBatches(as_images(imgs), [vit, cnn], batches)
    xs = [stream.load(b) for b in batches]
    with torch.no_grad():
        vit(xs[0][0][:4])
        cnn(xs[0][1][:4])
    rows = []
    for _ in range(args.repeats):
        for key in spent:
            spent[key] = 0.0

        def bare(xs=xs) -> None:
            with torch.no_grad():
                for xa, xb in xs:
                    vit(xa)
                    cnn(xb)

        bare_s = _timed(bare)[1]
        e2e_s = _timed(lambda: vitlens.cka(vit, imgs, cnn, layers_a=layers, layers_b=layers,
                                           batch_size=bs, progress=False, cache=False))[1]
        forward = spent["forward+hooks"] - spent["grams"]
        rest = e2e_s - spent["forward+hooks"] - spent["load"] - spent["accumulate"]
        row = {"pair": args.pair, "density": args.density, "batch_size": bs, "n_images": n,
               "bare_cpu_s": bare_s, "e2e_cpu_s": e2e_s, "forward_cpu_s": forward,
               **{f"{k}_cpu_s": v for k, v in spent.items()}, "rest_cpu_s": rest}
        rows.append(row)
        print(f"| {args.pair} | {args.density} | {bs} | {bare_s:.1f} | {e2e_s:.1f} | "
              f"{forward:.1f} | {spent['grams']:.2f} | {spent['load']:.2f} | "
              f"{spent['accumulate']:.3f} | {rest:.2f} |", flush=True)
    return rows


class _LazyNoise(torch.utils.data.Dataset):
    """Images generated from their index on access: the image set itself takes no memory."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return np.random.default_rng(i).integers(0, 256, (self.size, self.size, 3),
                                                 dtype=np.uint8)


def _memory_worker(pair: str, n: int, bs: int, density: str, plain: bool) -> dict:
    from vitlens.similarity import run as _cka_run

    _cka_run.GRAM_IN_HOOKS = not plain
    vit, cnn, size = load_pair(pair)
    layers = "blocks" if density == "blocks" else "all"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    vitlens.cka(vit, _LazyNoise(n, size), cnn, layers_a=layers, layers_b=layers,
                batch_size=bs, progress=False, cache=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_images": n, "peak_mib": peak / 1024, "before_mib": base / 1024,
            "seconds": time.perf_counter() - t, "grams_in_hooks": not plain}


def bench_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for n in args.images:
        cmd = [sys.executable, __file__, "memory-worker", "--pair", args.pair, "--n", str(n),
               "--batch-size", str(args.batch_size), "--density", args.density,
               "--threads", str(args.threads)] + (["--plain"] if args.plain else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"| {args.pair} {args.density} | {'hooks' if not args.plain else 'plain'} | "
              f"{r['n_images']} | {args.batch_size} | "
              f"{r['before_mib']:.0f} | {r['peak_mib']:.0f} | {r['seconds']:.1f} |", flush=True)
    a, b = rows[0]["peak_mib"], rows[-1]["peak_mib"]
    print(f"peak difference {100 * (b - a) / a:+.1f}% ({rows[0]['n_images']} vs "
          f"{rows[-1]['n_images']} images)")
    return rows


_DIST_WORKER = """
import json, sys, time, torch
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
torch.set_num_threads({threads})
import numpy as np, vitlens
from vitlens import distributed as vd
from end_to_end import load_pair, noise_images
vd.init_from_env()
vit, cnn, size = load_pair({pair!r})
imgs = noise_images({n}, size)
vd.barrier(); t = time.perf_counter()
res = vitlens.cka(vit, imgs, cnn, layers_a="all", layers_b="blocks", batch_size={bs},
                  progress=False, cache=False)
vd.barrier(); sec = time.perf_counter() - t
if vd.is_main():
    np.save({out!r}, res.matrix)
    print(json.dumps({{"world": vd.world(), "cka_s": sec}}))
"""


def bench_dist(args: argparse.Namespace) -> list[dict]:
    import socket
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
            ("torchrun 2 x gloo, 1 thread each", 2, 1)]
    rows, mats = [], {}
    for label, world, threads in runs:
        script = tmp / f"w{world}{threads}.py"
        out = tmp / f"m{world}{threads}.npy"
        script.write_text(_DIST_WORKER.format(
            repo=str(REPO), bench=str(REPO / "benchmarks"), threads=threads, pair=args.pair,
            n=args.n, bs=args.batch_size, out=str(out)))
        if world == 1:
            cmd = [sys.executable, str(script)]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                   str(world), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   str(script)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        wall = time.perf_counter() - t
        rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
        mats[(world, threads)] = np.load(out)
        rows.append({"run": label, "world": world, "threads": threads, "cka_s": rec["cka_s"],
                     "wall_s": wall, "load": os.getloadavg()[0]})
    base = rows[0]["cka_s"]
    for row, key in zip(rows, mats, strict=True):
        row["speedup_vs_1x1"] = base / row["cka_s"]
        row["max_abs_diff_vs_1x1"] = float(np.abs(mats[key] - mats[(1, 1)]).max())
        print(f"| {row['run']} | {row['cka_s']:.1f} | {row['wall_s']:.1f} | "
              f"{row['speedup_vs_1x1']:.2f} | {row['max_abs_diff_vs_1x1']:.1e} | "
              f"{row['load']:.1f} |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["ratio", "profile", "precision", "memory", "dist",
                                     "memory-worker"])
    ap.add_argument("--pair", default="vitb16-r50", choices=["vitb16-r50", "zoo"])
    ap.add_argument("--density", default="blocks", choices=["blocks", "paper"])
    ap.add_argument("--batch-sizes", default="64,128,256")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=1, help="batches per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1024, help="images (precision, dist)")
    ap.add_argument("--images", default="512,4096", help="image counts (memory)")
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: stable timings on a shared machine)")
    ap.add_argument("--no-floor", action="store_true", help="skip timing the Gram floor")
    ap.add_argument("--plain", action="store_true",
                    help="memory: hold every layer until the batch ends (no Grams in hooks)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small and few")
    ap.add_argument("--json", type=Path, help="append the raw results here (JSON lines)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.images = [int(n) for n in args.images.split(",")]
    if args.quick:
        args.batch_sizes, args.repeats = args.batch_sizes[:1], 1
        args.n, args.images = min(args.n, 128), [min(n, 1024) for n in args.images]
    if args.what == "memory-worker":
        print(json.dumps(_memory_worker(args.pair, args.n, args.batch_size, args.density,
                                        args.plain)))
        return
    print(f"# {args.what} {args.pair} threads={args.threads} load={os.getloadavg()}")
    rows = {"ratio": bench_ratio, "profile": bench_profile, "precision": bench_precision,
            "memory": bench_memory, "dist": bench_dist}[args.what](args)
    if args.json:
        with args.json.open("a") as f:
            for row in rows:
                f.write(json.dumps({"what": args.what, **row}) + "\n")


if __name__ == "__main__":
    main()
