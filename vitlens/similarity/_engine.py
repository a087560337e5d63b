"""Per-batch unbiased HSIC for every pair of layers: the numerical core (private).

Every function here returns *weighted* sums ``n * HSIC_1`` (``n`` = batch size), the
quantity :class:`~vitlens.similarity.MinibatchCKA` accumulates. Two exact routes:

* Gram route. Each layer's features are centred per batch (column chunk by chunk, into one
  reused buffer) and its Gram ``K`` (n, n) is accumulated in ``gram_dtype`` (float32 for
  float32 activations: after centring that is accurate to ~1e-8 in CKA, see the tests),
  using the symmetry of ``K`` (upper block triangle only). ``K`` is U-centred in
  float64 and the strict upper triangle is packed into a row of length ``N = n(n-1)/2``. As
  U-centred matrices have zero diagonals, ``<U_K, U_L> = 2 u_K . u_L``, so one float64 matrix
  product ``(L_a, N) @ (N, L_b)`` gives every pair, and ``n HSIC_1 = 2 u_K . u_L / (n-3)``.
* Feature route, for narrow layers (total width small next to ``n``). With ``K = X X^T``,
  ``k = diag K``, ``s = X^T 1`` and the analogous ``l``, ``t`` for ``Y``:
  ``tr(K~L~) = ||X^T Y||_F^2 - k.l``, ``1^T K~ 1 = s.s - sum(k)``, ``K~ 1 = X s - k`` and
  ``1^T K~ L~ 1 = (K~ 1).(L~ 1)``, which give HSIC_1 without any (n, n) matrix. All float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = ["packed_ucentred_gram"]

_BUF_ELEMS = 1 << 20  # elements of the CPU centring buffer: 4 MiB in float32 (cache sized)
_BUF_ELEMS_GPU = 1 << 24  # on a GPU: fewer, larger products (no cache to fit)
_STRIP_MIN = 32  # smallest row strip of the block-triangular Gram (n < 64: full product)
_GRAM_MAX_ELEMS = 1 << 28  # above this many Gram elements prefer the feature route (memory)
_CONST_RTOL = 64.0  # U-centred Gram below this many ulps of max|K| counts as exactly zero

Labeller = Callable[[int], str]


@contextmanager
def _exact_fp32_matmul() -> Iterator[None]:
    """Disable TF32 / bf16 float32 matmuls (a global torch setting) inside the block."""
    prev = torch.get_float32_matmul_precision()
    if prev == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _nonfinite_error(x: torch.Tensor, label: str) -> ValueError:
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    msg = (f"layer {label} has non-finite activations in this batch ({n_nan} NaN, {n_inf} "
           f"inf values in a tensor of shape {tuple(x.shape)}); CKA needs finite features. "
           "Check the model for overflow (e.g. float16 autocast) or the inputs for NaN")
    return ValueError(msg)


def _centred_gram_into(k: torch.Tensor, x: torch.Tensor) -> None:
    """Upper block triangle of the Gram (n, n) of the batch-centred ``x`` (n, d), into ``k``.

    ``k`` is zero on entry and sets the dtype. The column means are taken once; column
    chunks are then centred into one reused buffer (at most ``_BUF_ELEMS`` elements on CPU) and
    their Grams added. Only the upper block triangle is computed, in row strips of
    ``max(32, n // 8)`` rows (9/16 of the work of a full product for n >= 256); entries below
    the strips' diagonal blocks are left as they were.
    """
    n, d = x.shape
    dt = k.dtype
    if x.dtype != dt:
        x = x.to(dt)
    # column means as a matrix-vector product: far faster than a dim-0 reduction on CPU
    mu = torch.full((n,), 1.0 / n, dtype=dt, device=x.device) @ x  # (d,)
    buf_elems = _BUF_ELEMS if x.device.type == "cpu" else _BUF_ELEMS_GPU
    n_chunks = -(-d // max(64, buf_elems // n))
    cols = -(-d // n_chunks)
    buf = torch.empty(n * min(cols, d), dtype=dt, device=x.device)
    strip = n if n < 2 * _STRIP_MIN else max(_STRIP_MIN, n // 8)
    for j in range(0, d, cols):
        w = min(cols, d - j)
        xc = buf[:n * w].view(n, w)
        torch.sub(x[:, j:j + w], mu[j:j + w], out=xc)  # centred chunk (n, w)
        for i in range(0, n, strip):
            k[i:i + strip, i:].addmm_(xc[i:i + strip], xc[i:].T)


def _run_layers(fn: Callable[[int], None], widths: list[int], device: torch.device) -> None:
    """Call ``fn(i)`` for every layer; on a multi-threaded CPU, layers run in parallel.

    Each worker thread runs single-threaded torch ops on whole layers (widest first), so
    no operation waits at an OpenMP barrier: many small parallel regions are slow, and on a
    busy machine each barrier can cost a scheduler time slice. ``torch.set_num_threads`` is
    set to 1 for the duration of the call (it is process wide) and restored afterwards.
    """
    nt = torch.get_num_threads()
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    if device.type != "cpu" or nt < 2 or len(widths) < 2:
        for i in order:
            fn(i)
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(nt, len(widths))) as pool:
            for fut in [pool.submit(fn, i) for i in order]:
                fut.result()
    finally:
        torch.set_num_threads(nt)


def _packed_grams(feats: Sequence[torch.Tensor], gram_dtype: torch.dtype, label: Labeller,
                  iu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strict upper triangles (L, N) and diagonals (L, n) of the centred Grams, float64.

    Also returns each layer's Gram rounding unit (L,). A Gram that is not finite although
    its features are (float32 overflow) is recomputed in float64; non-finite features raise.
    """
    n, dev = feats[0].shape[0], feats[0].device
    dts = [torch.float64 if x.dtype == torch.float64 else gram_dtype for x in feats]
    g = torch.zeros(len(feats), n, n, dtype=dts[0] if len(set(dts)) == 1 else torch.float64,
                    device=dev)

    def one(i: int) -> None:
        if dts[i] == g.dtype:
            _centred_gram_into(g[i], feats[i])
        else:
            tmp = torch.zeros(n, n, dtype=dts[i], device=dev)
            _centred_gram_into(tmp, feats[i])
            g[i] = tmp

    _run_layers(one, [x.shape[1] for x in feats], dev)
    upper = g[:, iu[0], iu[1]].to(torch.float64)  # (L, N)
    diag = g.diagonal(dim1=1, dim2=2).to(torch.float64)  # (L, n)
    eps = torch.tensor([torch.finfo(dt).eps for dt in dts], dtype=torch.float64, device=dev)
    if not bool(torch.isfinite(upper).all() & torch.isfinite(diag).all()):
        bad = ~(torch.isfinite(upper).all(dim=1) & torch.isfinite(diag).all(dim=1))
        for i in torch.nonzero(bad).flatten().tolist():
            x = feats[i]
            if not bool(torch.isfinite(x).all()):
                raise _nonfinite_error(x, label(i))
            k = torch.zeros(n, n, dtype=torch.float64, device=dev)
            _centred_gram_into(k, x)  # finite but too large for float32
            upper[i], diag[i], eps[i] = k[iu[0], iu[1]], k.diagonal(), torch.finfo(k.dtype).eps
    return upper, diag, eps


def _ucentred_rows(upper: torch.Tensor, diag: torch.Tensor, eps: torch.Tensor, n: int,
                   iu: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """Packed U-centred Grams (L, N) from packed centred Grams, for all layers at once.

    A layer whose U-centred Gram is below ``_CONST_RTOL`` rounding units of its Gram's
    largest entry was constant over the batch; its row is set to exactly zero.
    """
    r = torch.zeros_like(diag).index_add_(1, iu[0], upper).index_add_(1, iu[1], upper)  # K~1
    s = r.sum(dim=1, keepdim=True)  # 1^T K~ 1, (L, 1)
    u = upper - (r[:, iu[0]] + r[:, iu[1]]) / (n - 2) + s / ((n - 1) * (n - 2))
    scale = torch.maximum(upper.abs().amax(dim=1), diag.abs().amax(dim=1))
    const = u.abs().amax(dim=1) <= _CONST_RTOL * eps * scale
    if bool(const.any()):
        u[const] = 0.0
    return u, const.tolist()


def _gram_rows(feats: Sequence[torch.Tensor], gram_dtype: torch.dtype, label: Labeller,
               iu: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """Stack the packed U-centred Grams of ``feats`` (each (n, d)) as (L, N) float64."""
    upper, diag, eps = _packed_grams(feats, gram_dtype, label, iu)
    return _ucentred_rows(upper, diag, eps, feats[0].shape[0], iu)


def _feature_stats(x: torch.Tensor, label: str) -> tuple[torch.Tensor, ...]:
    """Centred float64 features (n, d) with k (n,), K~1 (n,) and 1^T K~ 1 (0-d)."""
    x64 = x.to(torch.float64)
    if not bool(torch.isfinite(x64.sum())) and not bool(torch.isfinite(x64).all()):
        raise _nonfinite_error(x, label)
    if bool((x64 == x64[:1]).all()):
        xc = torch.zeros_like(x64)  # a constant layer
    else:
        xc = x64 - x64.mean(dim=0)
    kd = (xc * xc).sum(dim=1)
    s = xc.sum(dim=0)
    r = xc @ s - kd
    return xc, kd, r, s @ s - kd.sum()


def _segment_sq_sums(xa: torch.Tensor, xb: torch.Tensor, sizes_a: list[int],
                     sizes_b: list[int]) -> torch.Tensor:
    """``||X_a^T Y_b||_F^2`` for every pair of column blocks, shape (L_a, L_b)."""
    dev = xa.device
    p = (xa.T @ xb).square_()  # (D_a, D_b), one product for every pair
    seg_a = torch.repeat_interleave(torch.arange(len(sizes_a), device=dev),
                                    torch.tensor(sizes_a, device=dev))
    seg_b = torch.repeat_interleave(torch.arange(len(sizes_b), device=dev),
                                    torch.tensor(sizes_b, device=dev))
    rows = torch.zeros(len(sizes_a), p.shape[1], dtype=p.dtype, device=dev).index_add_(0, seg_a, p)
    return torch.zeros(len(sizes_a), len(sizes_b), dtype=p.dtype,
                       device=dev).index_add_(1, seg_b, rows)


def _feature_route(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor] | None,
                   label_a: Labeller, label_b: Labeller
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[bool], list[bool]]:
    n = feats_a[0].shape[0]
    sa = [_feature_stats(x, label_a(i)) for i, x in enumerate(feats_a)]
    sb = sa if feats_b is None else [_feature_stats(x, label_b(i)) for i, x in enumerate(feats_b)]

    def _pairs(p: list[tuple[torch.Tensor, ...]], q: list[tuple[torch.Tensor, ...]]
               ) -> torch.Tensor:
        tr = _segment_sq_sums(torch.cat([s[0] for s in p], dim=1),
                              torch.cat([s[0] for s in q], dim=1),
                              [s[0].shape[1] for s in p], [s[0].shape[1] for s in q])
        kp, kq = torch.stack([s[1] for s in p]), torch.stack([s[1] for s in q])
        rp, rq = torch.stack([s[2] for s in p]), torch.stack([s[2] for s in q])
        sp, sq = torch.stack([s[3] for s in p]), torch.stack([s[3] for s in q])
        full = (tr - kp @ kq.T + torch.outer(sp, sq) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (rp @ rq.T))  # n(n-3) HSIC_1
        return full / (n - 3)

    ab = _pairs(sa, sb)
    const_a = [bool((s[0] == 0).all()) for s in sa]
    if feats_b is None:
        aa = _zero_to_rounding(ab.diagonal().clone(), sa, n)
        return ab, aa, aa, const_a, const_a
    aa = _zero_to_rounding(torch.stack([_pairs([s], [s])[0, 0] for s in sa]), sa, n)
    bb = _zero_to_rounding(torch.stack([_pairs([s], [s])[0, 0] for s in sb]), sb, n)
    return ab, aa, bb, const_a, [bool((s[0] == 0).all()) for s in sb]


#: Relative rounding allowance of the feature route's self-HSIC, per example (times float64's
#: epsilon): its four terms, each at most about ``tr(K)^2``, cancel exactly for a layer whose
#: U-centred Gram is zero, and leave about ``n * eps * tr(K)^2`` of either sign. A real layer
#: sits near ``tr(K)^2 / d`` or above (d features), millions of times larger.
_SELF_HSIC_ROUNDING = 16.0


def _zero_to_rounding(self_hsic: torch.Tensor, stats: list[tuple[torch.Tensor, ...]],
                      n: int) -> torch.Tensor:
    """``n HSIC_1(K, K)`` per layer, with values within the rounding of its terms set to 0
    (so a layer that varies in too few examples reads as 0 on every machine, not as +-1e-17
    by the luck of the summation order)."""
    trace = torch.stack([s[1].sum() for s in stats])  # tr(K) of the centred features
    allowance = _SELF_HSIC_ROUNDING * n * torch.finfo(torch.float64).eps * trace.square() / (n - 3)
    return torch.where(self_hsic.abs() <= allowance, torch.zeros_like(self_hsic), self_hsic)


def _use_feature_route(n: int, dims_a: list[int], dims_b: list[int] | None,
                       gram_dtype: torch.dtype) -> bool:
    """Pick the cheaper route by a flop model (float64 costs twice float32).

    The strip Gram costs about 9/16 of a full product for n >= 256 (0.85 is a measured
    allowance for the smaller products). When the Gram route's memory would exceed
    ``_GRAM_MAX_ELEMS`` (very large n, as in :func:`linear_cka` on many examples) the
    feature route is taken if its own memory is smaller.
    """
    da = sum(dims_a)
    db = da if dims_b is None else sum(dims_b)
    gram_width = da if dims_b is None else da + db
    unit = 1.0 if gram_dtype == torch.float32 else 2.0
    la, lb = len(dims_a), len(dims_a) if dims_b is None else len(dims_b)
    gram = unit * 0.85 * n * n * gram_width + la * lb * n * n
    feature = 2.0 * n * da * db
    if dims_b is not None:
        feature += 2.0 * n * (sum(d * d for d in dims_a) + sum(d * d for d in dims_b))
    gram_mem = (la + lb) * n * n
    if gram_mem > _GRAM_MAX_ELEMS and da * db + n * (da + db) < gram_mem:
        return True
    return feature < gram


def _triu(n: int, device: torch.device, cache: dict) -> torch.Tensor:
    key = (n, str(device))
    if key not in cache:
        cache.clear()
        cache[key] = torch.triu_indices(n, n, offset=1, device=device)
    return cache[key]


def batch_hsic(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor] | None, *,
               gram_dtype: torch.dtype, route: str = "auto", label_a: Labeller = str,
               label_b: Labeller = str, cache: dict | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[bool], list[bool]]:
    """Weighted unbiased HSICs ``n * HSIC_1`` of one batch, for every pair of layers.

    Args:
        feats_a: L_a tensors of shape (n, d_l), any float dtype, on one device.
        feats_b: L_b tensors of shape (n, e_l), or None to compare ``feats_a`` with itself.
        gram_dtype: dtype of the chunk Grams on the Gram route (float32 or float64); float64
            layers always use float64.
        route: ``"auto"``, ``"gram"`` or ``"feature"``.
        label_a, label_b: Index -> layer label, for error messages.
        cache: Optional dict reused across calls for the packing indices.

    Returns:
        ``(ab, aa, bb, const_a, const_b)``: ab (L_a, L_b), aa (L_a,), bb (L_b,) float64, and
        per-layer flags saying the layer was constant over the batch.
    """
    n = feats_a[0].shape[0]
    if route == "auto":
        dims_b = None if feats_b is None else [x.shape[1] for x in feats_b]
        route = ("feature" if _use_feature_route(n, [x.shape[1] for x in feats_a], dims_b,
                                                  gram_dtype) else "gram")
    if route == "feature":
        return _feature_route(feats_a, feats_b, label_a, label_b)
    if route != "gram":
        msg = f"route must be 'auto', 'gram' or 'feature', got {route!r}"
        raise ValueError(msg)
    iu = _triu(n, feats_a[0].device, {} if cache is None else cache)
    la = len(feats_a)

    def label(i: int) -> str:
        return label_a(i) if i < la else label_b(i - la)

    with _exact_fp32_matmul():  # A's and B's Grams together, for the thread pool
        u, const = _gram_rows(list(feats_a) + list(feats_b or []), gram_dtype, label, iu)
    ua, const_a = u[:la], const[:la]
    ub, const_b = (ua, const_a) if feats_b is None else (u[la:], const[la:])
    w = 2.0 / (n - 3)
    ab = (ua @ ub.T) * w  # (L_a, L_b): every pair from one product
    if feats_b is None:
        aa = ab.diagonal().clone()
        return ab, aa, aa, const_a, const_a
    aa = ua.square().sum(dim=1) * w
    bb = ub.square().sum(dim=1) * w
    return ab, aa, bb, const_a, const_b


def packed_ucentred_gram(x: torch.Tensor, *, gram_dtype: torch.dtype = torch.float32,
                         label: str = "layer", cache: dict | None = None) -> torch.Tensor:
    """The strict upper triangle (N,) float64 of one layer's U-centred Gram, N = n(n-1)/2.

    The same arithmetic, in the same order, as the Gram route of :func:`batch_hsic` (and so
    of :meth:`MinibatchCKA.update`); capture calls it inside a forward hook so a wide layer
    is reduced while it is fresh. Runs without autocast and with exact float32 matmuls.

    Args:
        x: (n, d) features of one batch (n >= 4), any float dtype.
        gram_dtype: The chunk Grams' dtype (the engine's ``gram_dtype``).
        label: The layer's name, for the non-finite error.
        cache: Optional dict reused across calls for the packing indices.

    Raises:
        ValueError: non-finite features (the message names ``label``).
    """
    iu = _triu(x.shape[0], x.device, {} if cache is None else cache)
    with torch.autocast(x.device.type, enabled=False), _exact_fp32_matmul():
        rows, _ = _gram_rows([x], gram_dtype, lambda _i: repr(label), iu)
    return rows[0]
