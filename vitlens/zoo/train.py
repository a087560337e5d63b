"""Train the offline zoo on the synthetic dataset.

    python -m vitlens.zoo.train NAME|all [--steps N] [--out DIR] [--device cpu]

Each run is seeded and reproducible on a given machine. It writes ``weights/<name>.safetensors``
(fp16) and ``cards/<name>.json`` under ``--out`` (default: the package's own zoo folder). The
card's ``test_accuracy`` is measured on a held-out test split, with the fp16 weights as
shipped. The pct models use the first 3/10/30/60% of the same training set for the same number
of steps; ``vit-cls-ft`` starts from ``vit-cls`` and fine-tunes on domain 1 (a distant domain),
``vit-cls-ft-near`` on new images of domain 0 (training seed 1: the near domain). The
``-seed1``/``-seed2`` models repeat ``vit-sup`` and the pct models with another seed of the
initialisation and data order (same images), so Fig 12 is judged over three training seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..datasets.synthetic import synthetic
from . import registry
from ._machine import machine
from ._out import ZooOutput
from ._specs import CARDS_DIR, SPECS, canonical
from .architectures import ARCHITECTURES

__all__ = ["DEFAULTS", "correct_by_image", "evaluate", "main", "train_model"]

DEFAULTS: dict[str, Any] = {
    "steps": 2000,  # per model; fine-tuning uses ft_steps
    "ft_steps": 600,
    "batch_size": 32,
    "lr": 1e-3,
    "ft_lr": 5e-4,
    "weight_decay": 0.05,
    "warmup_frac": 0.05,
    "n_train": None,  # full training set; None: steps x batch_size (one pass, no repeats)
    "test_n": 5_000,
    "test_seed": 10_000,  # never used for training
    "seed": 0,
}

_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # reused across models in one process


def _arrays(split: str, n: int, seed: int, domain: int) -> tuple[np.ndarray, np.ndarray]:
    key = (split, n, seed, domain)
    if key not in _ARRAYS:
        # a larger cached set of the same split/seed/domain has this one as its prefix
        for (s, m, sd, d), (x, y) in _ARRAYS.items():
            if (s, sd, d) == (split, seed, domain) and m >= n:
                return x[:n], y[:n]
        _ARRAYS[key] = synthetic(split, n, seed=seed, domain=domain).arrays()
    return _ARRAYS[key]


def _to_input(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) -> normalised float (B, 3, 64, 64)."""
    t = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(registry.MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(registry.STD, device=device).view(1, 3, 1, 1)
    return (t - mean) / std


def evaluate(model: nn.Module, **images: Any) -> float:
    """Top-1 accuracy of ``model`` on ``synthetic(split, n, seed=seed, domain=domain)``: the
    mean of :func:`correct_by_image`, which takes the same keywords (``n=1000``,
    ``seed=10_000``, ``domain=0``, ``split="test"``, ``batch_size``, ``device``)."""
    return float(correct_by_image(model, **images).mean())


@torch.no_grad()
def correct_by_image(
    model: nn.Module,
    *,
    n: int = 1000,
    seed: int = 10_000,
    domain: int = 0,
    split: str = "test",
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Whether ``model``'s top-1 class is right, one bool per image of
    ``synthetic(split, n, seed=seed, domain=domain)`` in order (to pair two models)."""
    device = torch.device(device)
    x, y = _arrays(split, n, seed, domain)
    was_training = model.training
    model.eval()
    hits = [(model(_to_input(x[i : i + batch_size], device)).argmax(1).cpu().numpy()
             == y[i : i + batch_size]) for i in range(0, n, batch_size)]
    model.train(was_training)
    return np.concatenate(hits)


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _init_weights(spec: dict[str, Any], out: Path) -> dict[str, torch.Tensor]:
    src = spec["init_from"]
    for file in (out / "weights" / f"{src}.safetensors", registry.weights_path(src)):
        if file.is_file():
            return registry.load(src, file).state_dict()
    msg = f"fine-tuning needs {src!r} weights first: python -m vitlens.zoo.train {src}"
    raise FileNotFoundError(msg)


def _param_groups(model: nn.Module, weight_decay: float, lr: float,
                  layer_decay: float | None) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms; with ``layer_decay`` (fine-tuning a
    pretrained ViT, as in BEiT and MAE) block i of d learns at ``lr * layer_decay**(d - i)``,
    the embeddings at ``lr * layer_decay**(d + 1)``, the final norm and the head at ``lr``."""
    depth = len(getattr(model, "blocks", []))

    def scale(name: str) -> float:
        if not layer_decay or not depth:
            return 1.0
        if name.startswith("blocks."):
            return layer_decay ** (depth - int(name.split(".")[1]))
        if name.startswith(("patch_embed", "pos_embed", "cls_token", "reg_token")):
            return layer_decay ** (depth + 1)
        return 1.0

    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        key = (weight_decay if p.ndim > 1 else 0.0, scale(name))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": lr * sc} for (wd, sc), ps in groups.items()]


def _load_init(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Start ``model`` from another zoo model's weights: a classifier head it lacks keeps its
    fresh init; a GAP ViT drops the CLS token and its position (the spatial positions stay)
    and takes the final norm as its ``fc_norm``."""
    own = model.state_dict()
    use = {}
    for key, value in state.items():
        if key.startswith("norm.") and key not in own and f"fc_{key}" in own:
            key = f"fc_{key}"  # timm's GAP ViT applies the final norm after pooling
        if key not in own:
            continue  # e.g. cls_token for a GAP model
        if key == "pos_embed" and value.shape != own[key].shape:
            value = value[:, -own[key].shape[1] :]
        use[key] = value
    missing = [k for k in own if k not in use and not k.startswith("head.")]
    if missing:
        msg = f"the initial weights lack {missing}; they do not fit {type(model).__name__}"
        raise ValueError(msg)
    model.load_state_dict(use, strict=False)


def train_model(
    name: str,
    *,
    steps: int | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    n_train: int | None = None,
    test_n: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train zoo model ``name``, save its fp16 weights and card, and return the card.

    Args:
        name: A zoo name (see ``vitlens.zoo.names()``).
        steps: Optimiser steps (default ``DEFAULTS["steps"]``, or ``"ft_steps"`` for
            fine-tuning).
        out: Folder that receives ``weights/`` and ``cards/`` (default: the package zoo).
        device: Torch device.
        n_train: Size of the full training set (fractions take a prefix of it).
        test_n: Size of the held-out test split used for the card.
        batch_size: Batch size.
        progress: Show a tqdm progress bar.
        overwrite: Replace files in ``out`` that vitlens did not write there (by default a
            ``--out`` folder's other files are never replaced: :class:`ZooOutput`).
    """
    short = canonical(name)
    spec = SPECS[short]
    cfg = dict(DEFAULTS)
    if spec.get("seed") is not None:  # a seed replicate: its own init and data order
        cfg["seed"] = spec["seed"]
    if spec.get("objective") == "masked-patches":
        from .pretrain import train_backbone

        return train_backbone(short, steps=steps, out=out, device=device, progress=progress,
                              overwrite=overwrite, seed=cfg["seed"])
    ft = spec["init_from"] is not None
    steps = steps or spec.get("steps") or cfg["ft_steps" if ft else "steps"]
    bs = batch_size or cfg["batch_size"]
    test_n = test_n or cfg["test_n"]
    lr = spec.get("lr") or cfg["ft_lr" if ft else "lr"]
    n_full = n_train or spec["n_train"] or cfg["n_train"] or steps * bs
    n_used = max(bs, round(spec["fraction"] * n_full)) if spec["fraction"] < 1 else n_full
    n_used = min(n_used, n_full)
    folder = ZooOutput(out, overwrite)
    folder.check([short])  # before the training, not after it
    out_dir = folder.root
    dev = torch.device(device)

    t0 = time.perf_counter()
    # a fraction is a prefix of the full set (the dataset is prefix-stable): render only it
    x_train, y_train = _arrays("train", n_used, spec["train_seed"], spec["domain"])
    torch.manual_seed(cfg["seed"])
    model = registry.create(short)
    if ft:
        _load_init(model, _init_weights(spec, out_dir))
    model.to(dev).train()
    opt = torch.optim.AdamW(_param_groups(model, cfg["weight_decay"], lr,
                                          spec.get("layer_decay")), lr=lr)
    warmup = max(1, int(cfg["warmup_frac"] * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    gen = torch.Generator().manual_seed(cfg["seed"])
    order = torch.empty(0, dtype=torch.long)
    run_loss, run_acc = [], []
    bar = tqdm(range(steps), desc=short, disable=not progress, mininterval=5.0, file=sys.stderr)
    for _ in bar:
        while len(order) < bs:
            order = torch.cat([order, torch.randperm(n_used, generator=gen)])
        idx, order = np.sort(order[:bs].numpy()), order[bs:]
        xb = _to_input(x_train[idx], dev)
        yb = torch.from_numpy(y_train[idx]).to(dev)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss = (run_loss + [loss.item()])[-50:]
        run_acc = (run_acc + [(logits.argmax(1) == yb).float().mean().item()])[-50:]
        bar.set_postfix(
            loss=f"{np.mean(run_loss):.3f}", acc=f"{np.mean(run_acc):.3f}", refresh=False
        )
    bar.close()
    train_time = time.perf_counter() - t0

    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()
    }
    weights_file = folder.write_weights(short, state)
    shipped = registry.load(short, weights_file).to(dev)  # measure what ships (fp16 -> fp32)
    test = {"split": "test", "n": test_n, "seed": cfg["test_seed"], "domain": spec["domain"]}
    acc = evaluate(shipped, n=test_n, seed=cfg["test_seed"], domain=spec["domain"], device=dev)
    card: dict[str, Any] = {
        "name": short,
        "load": f"vitlens.load_model('vitlens/{short}')",
        "stands_in_for": spec["stands_in_for"],
        "architecture": {"family": spec["arch"], **ARCHITECTURES[spec["arch"]]},
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": {
            "name": "vitlens.datasets.synthetic",
            "split": "train",
            "seed": spec["train_seed"],
            "domain": spec["domain"],
            "n": n_full,
            "fraction": spec["fraction"],
            "n_used": n_used,
            "classes": 10,
        },
        "test": test,
        "test_accuracy": round(acc, 4),
        "train_accuracy_last50": round(float(np.mean(run_acc)), 4),
        "train_loss_last50": round(float(np.mean(run_loss)), 4),
        "steps": steps,
        "batch_size": bs,
        "optimizer": {
            "name": "AdamW",
            "lr": lr,
            "weight_decay": cfg["weight_decay"],
            "schedule": "linear warmup + cosine",
            "layer_decay": spec.get("layer_decay"),
            "warmup_steps": warmup,
            "grad_clip": 1.0,
        },
        "augmentation": "none (the renderer randomises position, scale, rotation, colour)",
        "seed": cfg["seed"],
        "init_from": spec["init_from"],
        "preprocessing": {
            "input_size": [3, 64, 64],
            "mean": list(registry.MEAN),
            "std": list(registry.STD),
        },
        "weights": {
            "file": f"weights/{short}.safetensors",
            "dtype": "float16",
            "bytes": weights_file.stat().st_size,
        },
        "wall_time_s": round(train_time, 1),
        **machine(dev),
    }
    if "noskip_block" in spec:
        card["noskip_block"] = spec["noskip_block"]
    if "vit-cls" in (short, spec["init_from"]):  # both domains, for the fine-tuning analysis
        card["test_accuracy_by_domain"] = {
            str(d): round(
                evaluate(shipped, n=test_n, seed=cfg["test_seed"], domain=d, device=dev), 4
            )
            for d in (0, 1)
        }
    folder.write_card(short, card)
    return card


def _order(names: list[str]) -> list[str]:
    """Models that others fine-tune from go first."""
    sources = {SPECS[n]["init_from"] for n in names} - {None}
    return sorted(names, key=lambda n: (n not in sources, SPECS[n]["init_from"] is not None))


def _summary(card: dict[str, Any]) -> str:
    """A trained model's test result: its accuracy, or a backbone's masked-patch test loss."""
    if card.get("test_accuracy") is not None:
        return f"test_accuracy={card['test_accuracy']:.4f}"
    pre = card["pretraining"]
    return (f"masked-patch test_loss={pre['test_loss']:.4f} "
            f"(mean patch: {pre['zero_predictor_test_loss']:.4f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlens.zoo.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="+", help=f"zoo names or 'all' ({', '.join(SPECS)})")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per model")
    parser.add_argument("--out", default=None, help=f"output folder (default {CARDS_DIR.parent})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in --out that vitlens did not write there")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's, one per core; 1 when training several "
        "models side by side)",
    )
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--test-n", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = list(SPECS) if "all" in args.names else [canonical(n) for n in args.names]
    ZooOutput(args.out, args.overwrite).check(names)  # before the first model is trained
    for name in _order(names):
        card = train_model(
            name, steps=args.steps, out=args.out, device=args.device, n_train=args.n_train,
            test_n=args.test_n, progress=not args.no_progress, overwrite=args.overwrite,
        )  # fmt: skip
        print(f"{name}: {_summary(card)} wall_time_s={card['wall_time_s']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
