"""Representation similarity: linear and RBF CKA, unbiased HSIC and minibatch CKA.

The estimators follow Kornblith et al. (2019) for CKA, Song et al. (2012) for the unbiased
HSIC and Nguyen, Raghu and Kornblith (2021) for minibatch CKA. Everything is accumulated in
float64 and nothing is clamped.

The one run that drives minibatch CKA over batches of images (models, capture, cache,
resume, shards, callbacks) is :class:`vitlens.similarity.run.CKARun`; it sits above the
capture package, so it is imported from its module, not from here.
"""

from __future__ import annotations

from ._checks import ConstantLayerWarning
from ._cka import linear_cka, rbf_cka
from ._engine import packed_ucentred_gram
from ._kernels import gram_linear, gram_rbf, hsic_biased, hsic_unbiased, ucenter
from ._minibatch import MinibatchCKA
from .stacked import StackedCKA

#: ``accumulate_rows(engine, rows_a, rows_b, n)``: the older spelling of
#: :meth:`MinibatchCKA.update_grams`.
accumulate_rows = MinibatchCKA.update_grams


__all__ = [
    "ConstantLayerWarning",
    "MinibatchCKA",
    "StackedCKA",
    "accumulate_rows",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "packed_ucentred_gram",
    "rbf_cka",
    "ucenter",
]
