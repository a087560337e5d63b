"""Benchmark: all-pairs minibatch CKA in vitlens against torch-cka and pytorch-cka.

Run from the repository root (see benchmarks/README.md, "CKA engine"):

    python benchmarks/cka_engine.py            # n=256 per batch, about 10 minutes on 2 idle cores
    python benchmarks/cka_engine.py --quick    # n=64, a smoke run

Anchors: ``torch-cka`` (AntixK, ``import torch_cka``) and ``pytorch-cka`` (``import cka``),
installed with ``pip install --no-deps torch-cka pytorch-cka matplotlib``.

Cases (random-init timm models, ``torch.manual_seed(0)``, the same images for every tool):

* ``blocks``: ViT-Tiny/16 block outputs (12) vs ResNet-18 units layer1.0 ... layer4.1 (8).
  End to end (forward passes + capture + CKA), each tool in a fresh subprocess; and the
  engines alone on the same captured activations.
* ``paper``: paper density, 72 ViT-Tiny capture points vs 43 ResNet-18 points, engines
  alone, with per-channel mean offsets added to the activations (two ViT channels at +3000,
  like "massive activations"). torch-cka is timed on a subset of rows and extrapolated.

Every tool's matrix is compared with a float64 reference computed here from the same
float32 activations (centred per batch in float64, explicit HSIC_1 formula, size-weighted).
Peak memory is the peak resident set size (RSS, read from /proc/self/statm every 2 ms)
above the RSS when the timed section starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VIT_BLOCKS = [f"blocks.{i}" for i in range(12)]
RES_UNITS = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
VIT_PAPER = [f"blocks.{i}{p}" for i in range(12)
             for p in (".norm1", ".attn", ".norm2", ".mlp.act", ".mlp", "")]  # 72
RES_PAPER = (["maxpool"] + [f"{u}{p}" for u in RES_UNITS
                            for p in (".conv1", ".act1", ".conv2", ".bn2", "")]
             + ["global_pool", "fc"])  # 43


# ----------------------------------------------------------------------------------------------
# Shared set-up
# ----------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak RSS above the starting RSS, sampled from /proc/self/statm in a thread (MiB)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20


def models():
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    # zero_init_last=False: a random-init ResNet otherwise has all-zero residual branches
    res = timm.create_model("resnet18", pretrained=False, zero_init_last=False).eval()
    return vit, res


def images(n_total: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n_total, 3, 224, 224, generator=g)  # (N, 3, 224, 224), preprocessed


def capture(model: torch.nn.Module, names: list[str], x: torch.Tensor
            ) -> tuple[list[torch.Tensor], list[tuple]]:
    """Plain forward hooks; outputs are cloned (timm's ResNet changes some in place).

    Returns:
        The (n, D) flattened activations and their original shapes.
    """
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = [mods[n].register_forward_hook(
        lambda _m, _i, out, n=n: store.__setitem__(n, out.detach().clone())) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ([store[n].reshape(len(x), -1) for n in names],
            [tuple(store[n].shape) for n in names])


def add_offsets(feats: list[torch.Tensor], shapes: list[tuple], seed: int) -> None:
    """Per-channel mean offsets, in place: 50|N(0,1)| per channel, two ViT channels +3000."""
    g = torch.Generator().manual_seed(seed)
    for f, shape in zip(feats, shapes, strict=True):
        if len(shape) == 3:  # ViT tokens (n, N, C)
            c = 50 * torch.randn(shape[2], generator=g).abs()
            c[:2] = 3000.0
            f.view(shape).add_(c)
        elif len(shape) == 4:  # (n, C, H, W)
            f.view(shape).add_(50 * torch.randn(shape[1], 1, 1, generator=g).abs())
        else:
            f.add_(50 * torch.randn(f.shape[1], generator=g).abs())


# ----------------------------------------------------------------------------------------------
# The float64 reference and the three engines on captured activations
# ----------------------------------------------------------------------------------------------


def ref_gram64(x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    for j in range(0, x.shape[1], chunk):
        c = x[:, j:j + chunk].double()
        c -= c.mean(dim=0)  # column means are exact per chunk
        k += c @ c.T
    return k


class Reference:
    """Explicit HSIC_1 (diagonals zeroed, three-term formula), batch-size weighted, float64."""

    def __init__(self) -> None:
        self.ab = self.aa = self.bb = None
        self.n = 0

    @staticmethod
    def _parts(grams: list[torch.Tensor]):
        k = torch.stack(grams)  # (L, n, n)
        k.diagonal(dim1=1, dim2=2).zero_()
        return k.flatten(1), k.sum(dim=(1, 2)), k.sum(dim=2)

    def update(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> None:
        n = fa[0].shape[0]
        ka, sa, ra = self._parts([ref_gram64(x) for x in fa])
        kb, sb, rb = self._parts([ref_gram64(y) for y in fb])

        def h(k1, s1, r1, k2, s2, r2):
            return (k1 @ k2.T + torch.outer(s1, s2) / ((n - 1) * (n - 2))
                    - 2.0 / (n - 2) * (r1 @ r2.T)) / (n * (n - 3))

        ab = n * h(ka, sa, ra, kb, sb, rb)
        aa = n * h(ka, sa, ra, ka, sa, ra).diagonal()
        bb = n * h(kb, sb, rb, kb, sb, rb).diagonal()
        if self.ab is None:
            self.ab, self.aa, self.bb = ab, aa, bb
        else:
            self.ab, self.aa, self.bb = self.ab + ab, self.aa + aa, self.bb + bb
        self.n += n

    def compute(self) -> np.ndarray:
        return (self.ab / torch.sqrt(self.aa[:, None] * self.bb[None, :])).numpy()


class VitlensEngine:
    def __init__(self) -> None:
        from vitlens.similarity import MinibatchCKA

        self.m = MinibatchCKA()

    def update(self, fa, fb) -> None:
        self.m.update(fa, fb)

    def compute(self) -> np.ndarray:
        return self.m.compute().numpy()


class PytorchCkaEngine:
    """pytorch-cka's own accumulation (cka.CKA._accumulate_hsic, two-model branch)."""

    def __init__(self) -> None:
        from cka import CKA, hsic

        self.hsic, self.finish = hsic, CKA._compute_cka_matrix
        self.xy = self.xx = self.yy = None

    def update(self, fa, fb) -> None:
        g1 = torch.stack([torch.mm(f, f.T) for f in fa])
        g2 = torch.stack([torch.mm(f, f.T) for f in fb])
        xy, xx, yy = self.hsic(g1, g2)
        if self.xy is None:
            self.xy, self.xx, self.yy = torch.zeros_like(xy), torch.zeros_like(xx), \
                torch.zeros_like(yy)
        self.xy += xy
        self.xx += xx
        self.yy += yy

    def compute(self) -> np.ndarray:
        return self.finish(None, self.xy, self.xx, self.yy).double().numpy()


class TorchCkaEngine:
    """torch-cka's loop from torch_cka.CKA.compare, calling its own _HSIC, for chosen rows."""

    def __init__(self, num_batches: int, rows: list[int] | None = None) -> None:
        from torch_cka import CKA

        self._hsic = CKA._HSIC
        self.dev = type("Dev", (), {"device": "cpu"})()
        self.nb, self.rows, self.m = num_batches, rows, None

    def update(self, fa, fb) -> None:
        rows = self.rows if self.rows is not None else list(range(len(fa)))
        if self.m is None:
            self.m = torch.zeros(len(rows), len(fb), 3)
        for r, i in enumerate(rows):
            X = fa[i].flatten(1)
            K = X @ X.t()
            K.fill_diagonal_(0.0)
            self.m[r, :, 0] += self._hsic(self.dev, K, K) / self.nb
            for j, feat2 in enumerate(fb):
                Y = feat2.flatten(1)
                L = Y @ Y.t()
                L.fill_diagonal_(0)
                self.m[r, j, 1] += self._hsic(self.dev, K, L) / self.nb
                self.m[r, j, 2] += self._hsic(self.dev, L, L) / self.nb

    def compute(self) -> np.ndarray:
        m = self.m
        return (m[:, :, 1] / (m[:, :, 0].sqrt() * m[:, :, 2].sqrt())).double().numpy()


# ----------------------------------------------------------------------------------------------
# Workers (each runs in its own process) and the driver
# ----------------------------------------------------------------------------------------------


def engines_worker(spec: dict) -> dict:
    """Capture once per batch, then time each engine's update on the same activations."""
    n, batches, case = spec["n"], spec["batches"], spec["case"]
    vit, res = models()
    names_a, names_b = (VIT_BLOCKS, RES_UNITS) if case == "blocks" else (VIT_PAPER, RES_PAPER)
    rows = spec.get("tcka_rows")
    engines = {"vitlens": VitlensEngine(), "pytorch-cka": PytorchCkaEngine(),
               "torch-cka": TorchCkaEngine(batches, rows)}
    times = dict.fromkeys(engines, 0.0)
    cpu = dict.fromkeys(engines, 0.0)
    peaks = dict.fromkeys(engines, 0.0)
    ref = Reference()
    x_all = images(n * batches)
    for b in range(batches):
        x = x_all[b * n:(b + 1) * n]
        fa, sha = capture(vit, names_a, x)
        fb, shb = capture(res, names_b, x)
        if case == "paper":
            add_offsets(fa, sha, seed=10 + b)
            add_offsets(fb, shb, seed=100 + b)
        for name, eng in engines.items():
            with PeakRSS() as p:
                t0, c0 = time.perf_counter(), time.process_time()
                eng.update(fa, fb)
                times[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
            peaks[name] = max(peaks[name], p.mib)
        ref.update(fa, fb)
        del fa, fb
    refm = ref.compute()
    out = {"dims_a": [int(np.prod(s[1:])) for s in sha], "dims_b": [int(np.prod(s[1:]))
                                                                   for s in shb]}
    for name, eng in engines.items():
        t0, c0 = time.perf_counter(), time.process_time()
        m = eng.compute()
        times[name] += time.perf_counter() - t0
        cpu[name] += time.process_time() - c0
        r = refm if name != "torch-cka" or rows is None else refm[rows]
        fin = np.isfinite(m)
        out[name] = {"seconds": times[name], "cpu_seconds": cpu[name], "peak_mib": peaks[name],
                     "max_abs_err": float(np.abs(m - r)[fin].max()) if fin.any() else np.nan,
                     "nan": int((~fin).sum())}
    out["reference"] = refm.tolist()
    out["ref_min_abs"] = float(np.abs(refm).min())
    return out


def e2e_worker(spec: dict) -> dict:
    """One tool end to end: forward passes, capture and CKA, as its users would call it."""
    from torch.utils.data import DataLoader, TensorDataset

    n, batches, tool = spec["n"], spec["batches"], spec["tool"]
    vit, res = models()
    x_all = images(n * batches)
    loader = DataLoader(TensorDataset(x_all, torch.zeros(len(x_all))), batch_size=n)
    with PeakRSS() as p:
        t0, c0 = time.perf_counter(), time.process_time()
        if tool == "forward":  # the bound: bare forward passes of both models, no capture
            with torch.no_grad():
                for x, _ in loader:
                    vit(x)
                    res(x)
            mat = np.full((len(VIT_BLOCKS), len(RES_UNITS)), np.nan)
        elif tool == "vitlens":
            import vitlens

            r = vitlens.cka(vit, x_all, res, layers_a=VIT_BLOCKS, layers_b=RES_UNITS,
                            batch_size=n, device="cpu", progress=False, cache=False)
            assert list(r.layers_a) == VIT_BLOCKS and list(r.layers_b) == RES_UNITS
            mat = np.asarray(r.matrix, dtype=np.float64)
        elif tool == "pytorch-cka":
            from cka import compute_cka

            mat = compute_cka(vit, res, loader, layers=VIT_BLOCKS, model2_layers=RES_UNITS,
                              device="cpu", progress=False)[0].double().numpy()
        else:
            from torch_cka import CKA

            c = CKA(vit, res, model1_name="vit", model2_name="resnet",
                    model1_layers=VIT_BLOCKS, model2_layers=RES_UNITS, device="cpu")
            try:
                with torch.no_grad():  # compare() itself keeps autograd on; this only helps it
                    c.compare(loader)
            except AssertionError:  # its own check "HSIC computation resulted in NANs",
                pass  # raised after the loop: the matrix (with its NaN) is already there
            mat = c.hsic_matrix.double().numpy()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    import resource

    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": p.mib,
            "matrix": mat.tolist(),
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


THREADS = 0


def _spawn(spec: dict) -> dict:
    spec = dict(spec, threads=THREADS)
    load0 = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load"] = [load0, os.getloadavg()[0]]
    return out


def _fmt_err(e: float) -> str:
    return f"{e:.1e}"


def report(res: dict, args) -> str:
    b, p = res["blocks"], res.get("paper")
    b.setdefault("ref_min_abs", float("nan"))
    lines = [f"n = {args.n} per batch, {args.batches} batches (blocks), "
             f"{args.paper_batches} batches (paper); torch {torch.__version__}, "
             f"{os.cpu_count()} CPU cores, torch threads: {args.threads or 'default'}", ""]
    fwd = res["e2e"].get("forward")
    if fwd is not None:
        lines += [f"Bare forward passes of both models (the end-to-end bound): "
                  f"{fwd['seconds']:.1f} s ({fwd['cpu_seconds']:.1f} CPU s). End-to-end times "
                  f"are the median of {len(fwd['all_seconds'])} interleaved runs.", ""]
    lines += ["**ViT-Tiny blocks (12) vs ResNet-18 units (8)**", "",
              "| tool | end-to-end s (CPU s) | anchor / vitlens | e2e / forward "
              "| engine-only s (CPU s) "
              "| anchor / vitlens | peak RSS e2e MiB | peak RSS engine MiB | max abs err e2e "
              "| max abs err engine | NaN/inf e2e, engine |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    e2e, eng = res["e2e"], b
    for tool in ("vitlens", "torch-cka", "pytorch-cka"):
        te, tg = e2e.get(tool, {"error": "not run"}), eng[tool]
        if "error" in te:
            te = {"seconds": float("nan"), "cpu_seconds": float("nan"), "peak_mib": float("nan"),
                  "err": float("nan"), "nan": "-"}
        lines.append(
            f"| {tool} | {te['seconds']:.1f} ({te['cpu_seconds']:.1f}) "
            f"| {te['seconds'] / e2e.get('vitlens', te)['seconds']:.2f} "
            f"| {te['seconds'] / (fwd or {'seconds': float('nan')})['seconds']:.2f} "
            f"| {tg['seconds']:.2f} ({tg['cpu_seconds']:.2f}) "
            f"| {tg['seconds'] / eng['vitlens']['seconds']:.2f} "
            f"| {te['peak_mib']:.0f} | {tg['peak_mib']:.0f} | {_fmt_err(te['err'])} "
            f"| {_fmt_err(tg['max_abs_err'])} | {te.get('nan', '-')}, {tg['nan']} |")
    if p is not None:
        rows = len(args.tcka_rows_list)
        lines += ["", f"**Paper density: 72 ViT-Tiny points vs 43 ResNet-18 points, with "
                  f"per-channel offsets** (smallest |CKA| in the reference: "
                  f"{p['ref_min_abs']:.1e})", "",
                  "| tool | engine-only s (CPU s) | anchor / vitlens | peak RSS MiB "
                  "| max abs err (finite entries) | NaN/inf entries |",
                  "|---|---|---|---|---|---|"]
        for tool in ("vitlens", "torch-cka", "pytorch-cka"):
            t = p[tool]
            scale = 72 / rows if tool == "torch-cka" else 1
            sec, cpu = t["seconds"] * scale, t["cpu_seconds"] * scale
            note = f", extrapolated from {rows} of 72 rows" if tool == "torch-cka" else ""
            lines.append(f"| {tool} | {sec:.2f} ({cpu:.2f}{note}) "
                         f"| {sec / p['vitlens']['seconds']:.1f} "
                         f"| {t['peak_mib']:.0f} | {_fmt_err(t['max_abs_err'])} | {t['nan']} |")
    lines += ["", "Load average (1 min) at the start of each worker: "
              + ", ".join(f"{k} {v[0]:.1f}" for k, v in res["loads"].items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n=64, 2 batches: a smoke run")
    ap.add_argument("--n", type=int, default=256, help="examples per batch")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--paper-batches", type=int, default=2)
    ap.add_argument("--tcka-rows", default="0,14,28,43,57,71",
                    help="paper case: ViT rows torch-cka computes (time extrapolated to 72)")
    ap.add_argument("--no-paper", action="store_true")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end runs")
    ap.add_argument("--e2e-repeats", type=int, default=3,
                    help="end-to-end runs per tool, interleaved; the median is reported")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--reuse", type=Path,
                    help="a --json file of an earlier run: keep its parts that did not fail")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in the workers (default: torch's default)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        fn = engines_worker if spec["kind"] == "engines" else e2e_worker
        print(json.dumps(fn(spec)))
        return
    if args.quick:
        args.n, args.batches, args.paper_batches = 64, 2, 1
    args.tcka_rows_list = [int(r) for r in args.tcka_rows.split(",")]
    global THREADS
    THREADS = args.threads
    old = json.loads(args.reuse.read_text()) if args.reuse else {"e2e": {}}
    res: dict = {"e2e": {}, "loads": old.get("loads", {})}
    t_start = time.perf_counter()
    res["blocks"] = old.get("blocks") or _spawn({"kind": "engines", "case": "blocks",
                                                 "n": args.n, "batches": args.batches})
    if "error" in res["blocks"]:
        sys.exit(f"engines worker failed: {res['blocks']['error']}")
    res["loads"]["engines(blocks)"] = res["blocks"]["load"]
    ref = np.asarray(res["blocks"]["reference"])
    tools = () if args.no_e2e else ("forward", "vitlens", "torch-cka", "pytorch-cka")
    runs: dict[str, list[dict]] = {t: [] for t in tools if "error" in old["e2e"].get(
        t, {"error": "not run"})}
    for _ in range(args.e2e_repeats):  # interleaved, so slow drifts hit every tool alike
        for tool in runs:
            out = _spawn({"kind": "e2e", "tool": tool, "n": args.n, "batches": args.batches})
            if "error" in out:
                sys.exit(f"e2e worker {tool} failed: {out['error']}")
            runs[tool].append(out)
            print(f"{tool} end to end: {out['seconds']:.2f} s", file=sys.stderr)
    for tool in tools:
        if tool not in runs:
            res["e2e"][tool] = old["e2e"][tool]
            continue
        outs = sorted(runs[tool], key=lambda o: o["seconds"])
        out = dict(outs[len(outs) // 2], all_seconds=[o["seconds"] for o in runs[tool]])
        m = np.asarray(out["matrix"], dtype=np.float64)
        fin = np.isfinite(m)
        out["err"] = float(np.abs(m - ref)[fin].max()) if fin.any() else float("nan")
        out["nan"] = int((~fin).sum())
        res["loads"][f"e2e {tool}"] = out["load"]
        res["e2e"][tool] = out
    if not args.no_paper and old.get("paper"):
        res["paper"] = old["paper"]
    elif not args.no_paper:
        res["paper"] = _spawn({"kind": "engines", "case": "paper", "n": args.n,
                               "batches": args.paper_batches,
                               "tcka_rows": args.tcka_rows_list})
        if "error" in res["paper"]:
            sys.exit(f"paper worker failed: {res['paper']['error']}")
        res["loads"]["engines(paper)"] = res["paper"]["load"]
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(report(res, args))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
