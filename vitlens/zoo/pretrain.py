"""Masked-patch pretraining of the zoo ViT on crops of the bundled sample photos.

The zoo's stand-in for large-scale pretraining (see docs/ZOO.md): classification on the
synthetic shapes never gave a ViT of this size local attention heads, while predicting masked
patches of real photographs did. The objective is SimMIM-style and adds nothing to the model
that would manufacture locality: exactly half of the 64 patch embeddings of each image are
replaced by one learned mask token *before* the (learned, absolute) position embedding is
added, and a linear head on the final patch tokens predicts the masked patches' pixels,
normalised per patch. The loss is the mean squared error on the masked patches only. The
backbone is a plain timm ``VisionTransformer``; the mask token and the pixel head are dropped
after pretraining.

Photos: 18 from scikit-image and 2 from scikit-learn, all bundled with those packages. Training
crops come from the left 80% of each photo and the fixed test crops from the right 20%, so the
test loss is measured on pixels never trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..datasets.samples import SKIMAGE_PHOTOS, SKLEARN_PHOTOS, _load_photo
from . import registry

__all__ = ["PHOTOS", "MaskedPatchModel", "PhotoCrops", "attention_locality", "masked_patch_loss",
           "patchify", "random_mask", "to_input"]

#: The photos crops are drawn from (all ship inside scikit-image / scikit-learn).
PHOTOS = SKIMAGE_PHOTOS + ("cat", "page", "text", "cell") + SKLEARN_PHOTOS
TRAIN_SHARE = 0.8  # left share of each photo's width used for training crops
IMG = 64


@dataclass(frozen=True)
class CropSpec:
    """How crops are drawn: side length in photo pixels, aspect range, flip probability."""

    min_side: int = 32
    max_side: int = 192
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5


class PhotoCrops:
    """Random crops of the sample photos, resized to 64x64 RGB uint8 with antialiasing.

    Args:
        part: ``"train"`` (left 80% of every photo) or ``"test"`` (the right 20%).
        spec: Crop sizes and augmentation.
    """

    def __init__(self, part: str = "train", spec: CropSpec | None = None) -> None:
        if part not in ("train", "test"):
            msg = f"part must be 'train' or 'test', got {part!r}"
            raise ValueError(msg)
        self.part, self.spec = part, spec or CropSpec()
        self.regions: list[Image.Image] = []
        for name in PHOTOS:
            img = _load_photo(name)
            w, h = img.size
            cut = int(round(w * TRAIN_SHARE))
            box = (0, 0, cut, h) if part == "train" else (cut, 0, w, h)
            self.regions.append(img.crop(box))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` crops as uint8 (n, 64, 64, 3); photos are drawn uniformly."""
        s = self.spec
        out = np.empty((n, IMG, IMG, 3), np.uint8)
        for k in range(n):
            region = self.regions[int(rng.integers(len(self.regions)))]
            w, h = region.size
            side = rng.uniform(s.min_side, s.max_side)
            aspect = math.exp(rng.uniform(math.log(s.aspect[0]), math.log(s.aspect[1])))
            cw = int(min(w, max(8, round(side * math.sqrt(aspect)))))
            ch = int(min(h, max(8, round(side / math.sqrt(aspect)))))
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            crop = region.crop((x0, y0, x0 + cw, y0 + ch))
            crop = crop.resize((IMG, IMG), Image.Resampling.LANCZOS)  # antialiased
            if rng.random() < s.flip:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out[k] = np.asarray(crop, np.uint8)
        return out


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Images (B, C, H, W) -> patches (B, N, patch*patch*C), in the patch embedding's order
    (row-major over the grid)."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    t = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(b, gh * gw, patch * patch * c)


class MaskedPatchModel(nn.Module):
    """A timm ViT with a learned mask token and a linear pixel head (pretraining only).

    Args:
        vit: A timm ``VisionTransformer`` (its classifier head is not used).
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        dim = vit.embed_dim
        self.patch = int(vit.patch_embed.patch_size[0])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.pixel_head = nn.Linear(dim, self.patch * self.patch * 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch (B, N, patch*patch*3); ``mask`` is (B, N) bool."""
        v = self.vit
        t = v.patch_embed(x)  # (B, N, D), before the position embedding
        t = torch.where(mask[..., None], self.mask_token.to(t.dtype).expand_as(t), t)
        t = v._pos_embed(t)
        t = v.norm_pre(v.patch_drop(t))
        t = v.norm(v.blocks(t))
        return self.pixel_head(t[:, v.num_prefix_tokens :])


def random_mask(batch: int, n: int, n_masked: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, n) bool with exactly ``n_masked`` True per row, uniformly placed."""
    order = torch.rand(batch, n, generator=gen).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def masked_patch_loss(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, patch: int,
                      var_floor: float = 0.01) -> torch.Tensor:
    """Mean squared error between predicted and per-patch-normalised pixels, masked only."""
    target = patchify(x, patch)
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, unbiased=False, keepdim=True).clamp_min(var_floor)
    target = (target - mean) / var.sqrt()
    err = ((pred - target) ** 2).mean(-1)  # (B, N)
    return (err * mask).sum() / mask.sum()


def to_input(x: np.ndarray) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) -> the zoo's normalised float input (B, 3, 64, 64)."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(registry.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(registry.STD).view(1, 3, 1, 1)
    return (t - mean) / std


@torch.no_grad()
def attention_locality(vit: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Float64 locality of every head, recomputed from ``qkv`` (the training log's measure).

    CLS row and column are dropped and rows renormalised over the spatial keys. Returns
    ``local_ratio`` (L, H): attention mass on the 3x3 neighbourhood (self included) of
    interior queries over uniform attention's 9/S, and ``distance`` (L, H): the mean
    attention-weighted pixel distance over interior queries.
    """
    v = vit.eval()
    t = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
    gh, gw = v.patch_embed.grid_size
    p = int(v.patch_embed.patch_size[0])
    npt = v.num_prefix_tokens
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).double()
    cheb = (pos[:, None] - pos[None]).abs().amax(-1)  # (S, S)
    near = (cheb <= 1).double()
    dist = torch.cdist(pos, pos) * p
    interior = ((pos[:, 0] > 0) & (pos[:, 0] < gh - 1) & (pos[:, 1] > 0) & (pos[:, 1] < gw - 1))
    ratios, dists = [], []
    for blk in v.blocks:
        a = blk.attn
        h = blk.norm1(t).double()
        b, n, _ = h.shape
        w, bias = a.qkv.weight.double(), a.qkv.bias
        qkv = h @ w.T + (bias.double() if bias is not None else 0)
        q, k, _ = qkv.reshape(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm.double()(q), a.k_norm.double()(k)
        probs = ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1)[..., npt:, npt:]
        probs = probs / probs.sum(-1, keepdim=True)
        pi = probs[:, :, interior]  # (B, H, Si, S)
        mass = (pi * near[interior]).sum(-1).mean((0, 2))
        ratios.append((mass / (9 / (gh * gw))).numpy())
        dists.append((pi * dist[interior]).sum(-1).mean((0, 2)).numpy())
        a.float()
        t = blk(t)
    return {"local_ratio": np.stack(ratios), "distance": np.stack(dists)}


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def pretrain(vit: nn.Module, *, steps: int = 5000, batch_size: int = 128, lr: float = 2e-3,
             weight_decay: float = 0.05, warmup_frac: float = 0.08, mask_ratio: float = 0.5,
             seed: int = 0, test_n: int = 512, log_every: int = 250, log=None,
             progress: bool = True) -> dict:
    """Masked-patch pretraining of ``vit`` in place; returns the run's record.

    Args:
        vit: A timm ``VisionTransformer`` (trained in place; its head is untouched).
        steps, batch_size, lr, weight_decay, warmup_frac: AdamW with linear warmup and a
            cosine decay, gradient norm clipped at 1.
        mask_ratio: Share of the patches masked in every image (exactly, per image).
        seed: Seeds the mask token, the pixel head, the crops and the masks.
        test_n: Fixed test crops (right 20% of each photo) for the loss and locality log.
        log_every: Steps between log records (test loss and per-block locality).
        log: Called with each record (a dict), e.g. to append it to a file.
        progress: Show a tqdm progress bar.
    """
    import sys
    import time

    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = MaskedPatchModel(vit).train()
    n = vit.patch_embed.num_patches
    n_masked = int(round(mask_ratio * n))
    train, test = PhotoCrops("train"), PhotoCrops("test")
    rng = np.random.default_rng([seed, 1])
    x_test = to_input(test.sample(np.random.default_rng([seed, 2]), test_n))
    mask_test = random_mask(test_n, n, n_masked, torch.Generator().manual_seed(seed + 2))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, int(warmup_frac * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    gen = torch.Generator().manual_seed(seed + 1)
    history, run_loss, t0 = [], [], time.perf_counter()

    def record(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            test_loss = float(masked_patch_loss(model(x_test, mask_test), x_test, mask_test,
                                                model.patch))
            loc = attention_locality(vit, x_test[:256])
        model.train()
        rec = {"step": step, "minutes": round((time.perf_counter() - t0) / 60, 2),
               "train_loss": round(float(np.mean(run_loss)) if run_loss else float("nan"), 4),
               "test_loss": round(test_loss, 4),
               "block_max_local_ratio": [round(float(v), 2) for v in loc["local_ratio"].max(1)],
               "block_mean_distance": [round(float(v), 1) for v in loc["distance"].mean(1)]}
        history.append(rec)
        if log is not None:
            log(rec)
        return rec

    bar = tqdm(range(steps), desc="masked patches", disable=not progress, mininterval=10.0,
               file=sys.stderr)
    for step in bar:
        x = to_input(train.sample(rng, batch_size))
        mask = random_mask(batch_size, n, n_masked, gen)
        loss = masked_patch_loss(model(x, mask), x, mask, model.patch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss = (run_loss + [loss.item()])[-50:]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            rec = record(step + 1)
            bar.set_postfix(test=rec["test_loss"], local=max(rec["block_max_local_ratio"]),
                            refresh=False)
    bar.close()
    vit.eval()
    # the trivial baseline: predicting each masked patch as the mean patch (all zeros)
    with torch.no_grad():
        t = patchify(x_test, model.patch)
        t = (t - t.mean(-1, keepdim=True)) / t.var(-1, unbiased=False, keepdim=True).clamp_min(
            0.01).sqrt()
        zero = float(((t**2).mean(-1) * mask_test).sum() / mask_test.sum())
    return {"objective": "masked patches (SimMIM-style, pixels normalised per patch)",
            "steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "warmup_steps": warmup, "mask_ratio": mask_ratio, "seed": seed,
            "photos": list(PHOTOS), "test_crops": test_n,
            "test_loss": history[-1]["test_loss"], "zero_predictor_test_loss": round(zero, 4),
            "wall_time_s": round(time.perf_counter() - t0, 1), "history": history}


#: The masked-patch pretraining of the zoo (docs/ZOO.md, round 3g): one stage of 5,000 steps
#: from a ViT whose position embeddings start at std 0.2 (``architectures.POS_INIT_STD``).
#: Several stages run as warm restarts: each has its own seed (crops, masks, mask token,
#: pixel head), warmup and cosine decay, and starts from the previous stage's backbone.
STAGES: tuple[dict, ...] = ({"steps": 5000, "seed": 0},)


def pretrain_stages(vit: nn.Module, *, steps: int | None = None, progress: bool = True,
                    stages: tuple[dict, ...] = STAGES, log=None) -> dict:
    """Run :data:`STAGES` of :func:`pretrain` on ``vit`` in place; one record with every
    stage's settings and a log whose steps count from the first stage's start.

    Args:
        steps: Override every stage's steps (a smoke run).
    """
    done, history, parts = 0, [], []
    for stage in stages:
        n = steps or stage["steps"]

        def shifted(rec, offset=done):
            if log is not None:
                log(dict(rec, step=rec["step"] + offset))

        rec = pretrain(vit, steps=n, seed=stage["seed"], progress=progress, log=shifted)
        history += [dict(h, step=h["step"] + done) for h in rec.pop("history")]
        parts.append(rec)
        done += n
    last = parts[-1]
    return {**last, "steps": done, "stages": parts, "wall_time_s": round(
        sum(p["wall_time_s"] for p in parts), 1), "history": history}


def train_backbone(name: str, *, steps: int | None = None, out=None, device: str = "cpu",
                   progress: bool = True, overwrite: bool = False, seed: int = 0) -> dict:
    """Pretrain zoo model ``name`` (a ``"masked-patches"`` spec); save weights and card.

    ``seed`` 0 is the bundled run; another seed is a replicate (its own init, and every
    stage's seed shifted by it: crops, masks, mask token and pixel head) for measuring how
    much a finding rests on one training run (docs/ZOO.md 3i, 3s).

    The card records the run (settings, the loss on the held-out photo crops against the
    zero predictor's, and the locality log every 250 steps). ``out`` and ``overwrite``: see
    :class:`vitlens.zoo._out.ZooOutput` (a file in ``out`` that vitlens did not write is
    never replaced unless ``overwrite``).
    """
    from ._out import ZooOutput
    from ._specs import canonical
    from .architectures import build

    if str(device) != "cpu":
        msg = "masked-patch pretraining runs on the CPU only (it is seeded for a 2-core machine)"
        raise ValueError(msg)
    short = canonical(name)
    folder = ZooOutput(out, overwrite)
    folder.check([short])  # before the pretraining, not after it
    torch.manual_seed(seed)
    # built as the classifier it will become (timm's init draws the head before the rest, so
    # this fixes the backbone's init); the head is not trained here and not saved
    vit = build("vit-cls")
    stages = tuple(dict(stage, seed=stage["seed"] + seed) for stage in STAGES)
    record = pretrain_stages(vit, steps=steps, progress=progress, stages=stages)
    state = {k: v.detach().to("cpu", torch.float16).contiguous()
             for k, v in vit.state_dict().items() if not k.startswith("head.")}
    folder.write_weights(short, state)
    return write_backbone_card(short, record, folder, seed=seed)


def write_backbone_card(short: str, record: dict, out_dir, *, seed: int = 0) -> dict:
    """Write the card of a pretrained backbone from :func:`pretrain`'s record (``out_dir``: a
    folder, ``None`` for the package's, or a :class:`~vitlens.zoo._out.ZooOutput`)."""
    from safetensors.torch import load_file

    from ._machine import machine
    from ._out import ZooOutput, model_files
    from ._specs import SPECS
    from .architectures import ARCHITECTURES

    folder = out_dir if isinstance(out_dir, ZooOutput) else ZooOutput(out_dir)
    record = dict(record)
    history = record.pop("history")
    weights_file = folder.root / model_files(short)[0]
    spec = SPECS[short]
    card = {
        "name": short,
        "load": f"vitlens.load_model('vitlens/{short}')",
        "stands_in_for": spec["stands_in_for"],
        "architecture": {"family": spec["arch"], **ARCHITECTURES[spec["arch"]]},
        "params": sum(v.numel() for v in load_file(str(weights_file)).values()),
        "pretraining": record,
        "test_accuracy": None,
        "test": {"what": "masked-patch loss on crops of the right 20% of each photo",
                 "loss": record["test_loss"], "zero_predictor": record["zero_predictor_test_loss"]},
        "locality_log": history,
        "steps": record["steps"],
        "batch_size": record["batch_size"],
        "seed": seed,
        "init_from": None,
        "preprocessing": {"input_size": [3, 64, 64], "mean": list(registry.MEAN),
                          "std": list(registry.STD)},
        "weights": {"file": f"weights/{short}.safetensors", "dtype": "float16",
                    "bytes": weights_file.stat().st_size},
        "wall_time_s": record["wall_time_s"],
        **machine(),
    }
    folder.write_card(short, card)
    return card
