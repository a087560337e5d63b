"""Fine-tuning (App. G): per-block CKA of a model before vs after fine-tuning, per domain.

The lower blocks are preserved; the change is small on images like the pretraining data and
larger on a distant domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.labels import model_label
from ..similarity.run import joint_cka
from .scale import BlockCKAResult, _block_result

__all__ = ["FinetuneResult", "finetune_similarity"]


class FinetuneResult(BlockCKAResult):
    """Per-block CKA of a model before vs after fine-tuning, per image domain (App. G)."""

    row_title = "domain"


def finetune_similarity(before: str | nn.Module, after: str | nn.Module,
                        images_by_domain: Mapping[str, Any], *, layers: Any = "blocks",
                        token_mode: str = "flatten", batch_size: int = 64,
                        device: str | torch.device | None = None, progress: bool = True,
                        n_images: int | None = None) -> FinetuneResult:
    """Per-block CKA of a model before and after fine-tuning, on images of each domain.

    Args:
        before, after: The pretrained and the fine-tuned model (same architecture).
        images_by_domain: domain label -> images, e.g.
            ``{"domain 0": synthetic("test", 512), "domain 1": synthetic("test", 512, domain=1)}``.
        layers, token_mode, batch_size, device, progress, n_images: As in :func:`data_scale`.
    """
    if not images_by_domain:
        msg = "images_by_domain is empty: pass {domain label: images}"
        raise ValueError(msg)
    sims = {}
    for dom, imgs in images_by_domain.items():
        pair = joint_cka({"before": before, "after": after}, imgs, rows={"after": layers},
                         cols={"before": layers}, token_mode=token_mode, batch_size=batch_size,
                         device=device, progress=progress, n_images=n_images,
                         desc=f"CKA before/after ({dom})")
        sims[str(dom)] = pair[("after", "before")]
    res = _block_result(FinetuneResult, sims, model_label(before), token_mode,
                        title=f"Per-block CKA, {model_label(before)} before vs after fine-tuning")
    res.meta["after"] = model_label(after)
    return res
