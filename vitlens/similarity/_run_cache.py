"""The cache side of a :class:`~vitlens.similarity.run.CKARun`: its key, the stored result,
this rank's checkpoint, and the check that every rank runs the same thing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import cache as _cache
from .. import distributed as _dist
from ..datasets.preprocess import data_config
from ..results.similarity import SimilarityResult
from ._run_layout import ESTIMATOR
from ._run_support import _warn_constant


class RunCache:
    """Mixin of :class:`~vitlens.similarity.run.CKARun`: cache key, result, resume."""

    def _main(self) -> bool:
        return not self.sharded or _dist.is_main()

    def _bcast(self, obj: Any) -> Any:
        return _dist.broadcast_object(obj) if self.sharded else obj

    def key_parts(self) -> dict[str, Any]:
        """Everything the result depends on (hashed into the cache key)."""
        def model(m: nn.Module, label: str) -> dict[str, Any]:
            cfg = {k: str(v) for k, v in data_config(m).items()}
            return {"label": label, "weights": _cache.model_fingerprint(m), "data_config": cfg}

        if not self.pair:
            return {
                "models": {k: model(m, self.labels[k]) for k, m in self.models.items()},
                "images": _cache.images_fingerprint(self.images, self.n),
                "images_of": {k: _cache.images_fingerprint(v, self.n)
                              for k, v in self.extra_images.items()},
                "rows": self.row_sel, "cols": self.col_sel, "token_mode": self.token_mode,
                "estimator": ESTIMATOR, "batch_size": self.batch_size, "n_images": self.n,
                "precision": self.precision,
                "engine": f"route={self.engine.route},gram_dtype={self.engine.gram_dtype}",
            }
        return {
            "model_a": model(self.model_a, self.label_a),
            "model_b": "same" if self.same else model(self.model_b, self.label_b),
            "images": _cache.images_fingerprint(self.images, self.n),
            "images_b": (None if self.images_b is None
                         else _cache.images_fingerprint(self.images_b, self.n)),
            "layers_a": self.layers_a, "layers_b": self.layers_b,
            "token_mode": self.token_mode, "estimator": ESTIMATOR,
            "engine": f"route={self.engine.route},gram_dtype={self.engine.gram_dtype}",
            "batch_size": self.batch_size, "n_images": self.n, "precision": self.precision,
        }

    @property
    def key(self) -> str:
        """The cache key of this run (computed once: it hashes the weights and images)."""
        if self._key is None:
            self._key = _cache.make_key("cka", self.key_parts())
        return self._key

    def check_ranks(self) -> None:
        """Under ``torchrun``, fail on every rank if the ranks see different models,
        weights, images or parameters (e.g. an unseeded random init)."""
        if not self.sharded or not self.use_cache and not self.pair:
            return
        keys = _dist.all_gather_object(self.key)
        if len(set(keys)) > 1:
            bad = [r for r, k in enumerate(keys) if k != keys[0]]
            msg = (f"ranks {bad} differ from rank 0 in models, weights, images or parameters; "
                   "every rank must load the same models (seed random inits) and images")
            raise RuntimeError(msg)

    def cached(self) -> SimilarityResult | None:
        """The stored result of this run, if any (rank 0 reads it, every rank gets it)."""
        if not self.use_cache:
            return None
        hit = _cache.load_result("cka", self.key) if self._main() else None
        hit = self._bcast(hit)
        if hit is not None:
            _warn_constant(hit)
        return hit

    def _ckpt_path(self):
        rank, world = (_dist.rank(), _dist.world()) if self.sharded else (0, 1)
        return _cache.checkpoint_path("cka", self.key, rank, world)

    def resume(self) -> int:
        """Load this rank's checkpoint, if any; returns the number of batches it holds."""
        if not self.use_cache:
            return 0
        state = _cache.load_checkpoint(self._ckpt_path())
        if (state is None or state.get("key") != self.key
                or not 0 < int(state.get("done", 0)) < len(self.my_batches)):
            return 0
        self.engine.load_state_dict(state["engine"])
        self.done = int(state["done"])
        if state.get("amp") is not None:
            self.amp_dtype = getattr(torch, state["amp"]) if state["amp"] != "none" else None
            self.amp_note = state.get("amp_note")
        return self.done
