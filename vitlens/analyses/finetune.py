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


def finetune_similarity(before: str | nn.Module,
                        after: str | nn.Module | Mapping[str, str | nn.Module],
                        images_by_domain: Mapping[str, Any], *, layers: Any = "blocks",
                        token_mode: str = "flatten", batch_size: int = 64,
                        device: str | torch.device | None = None, progress: bool = True,
                        n_images: int | None = None) -> FinetuneResult:
    """Per-block CKA of a model before and after fine-tuning, on images of each domain.

    Args:
        before: The pretrained model.
        after: The fine-tuned model (same architecture), measured on every domain; or one
            fine-tuned model per domain, ``{domain label: model}`` with the labels of
            ``images_by_domain``, each measured on its own domain's images (App. G compares
            a fine-tune on a near domain with one on a distant domain).
        images_by_domain: domain label -> images, e.g.
            ``{"domain 0": synthetic("test", 512), "domain 1": synthetic("test", 512, domain=1)}``.
        layers, token_mode, batch_size, device, progress, n_images: As in :func:`data_scale`.

    Raises:
        ValueError: no domains, or a mapping ``after`` whose labels differ from the domains'.
    """
    if not images_by_domain:
        msg = "images_by_domain is empty: pass {domain label: images}"
        raise ValueError(msg)
    if isinstance(after, Mapping):
        if set(map(str, after)) != set(map(str, images_by_domain)):
            msg = (f"one fine-tuned model per domain: 'after' has labels {sorted(map(str, after))}"
                   f" but images_by_domain has {sorted(map(str, images_by_domain))}; use the "
                   "same labels")
            raise ValueError(msg)
        afters = {str(k): v for k, v in after.items()}
    else:
        afters = {str(dom): after for dom in images_by_domain}
    sims = {}
    for dom, imgs in images_by_domain.items():
        pair = joint_cka({"before": before, "after": afters[str(dom)]}, imgs,
                         rows={"after": layers}, cols={"before": layers}, token_mode=token_mode,
                         batch_size=batch_size, device=device, progress=progress,
                         n_images=n_images, desc=f"CKA before/after ({dom})")
        sims[str(dom)] = pair[("after", "before")]
    res = _block_result(FinetuneResult, sims, model_label(before), token_mode,
                        title=f"Per-block CKA, {model_label(before)} before vs after fine-tuning")
    res.meta["after"] = ({dom: model_label(m) for dom, m in afters.items()}
                         if isinstance(after, Mapping) else model_label(after))
    return res
