"""Representation similarity: linear and RBF CKA, unbiased HSIC and minibatch CKA.

The estimators follow Kornblith et al. (2019) for CKA, Song et al. (2012) for the unbiased
HSIC and Nguyen, Raghu and Kornblith (2021) for minibatch CKA. Everything is accumulated in
float64 and nothing is clamped.
"""

from __future__ import annotations

from ._checks import ConstantLayerWarning
from ._cka import linear_cka, rbf_cka
from ._kernels import gram_linear, gram_rbf, hsic_biased, hsic_unbiased, ucenter
from ._minibatch import MinibatchCKA

__all__ = [
    "ConstantLayerWarning",
    "MinibatchCKA",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "rbf_cka",
    "ucenter",
]
