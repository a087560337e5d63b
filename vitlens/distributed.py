"""Sharding vitlens statistics over ``torch.distributed`` (``torchrun``; NCCL or gloo).

Every vitlens statistic is a sum over images, so it shards naturally: each rank takes a
share of the batches, accumulates its float64 sums, and one ``all_reduce`` joins them.

>>> # torchrun --nproc-per-node 4 my_script.py
>>> from vitlens import distributed as vd
>>> vd.init_from_env()                  # joins the group torchrun describes (no-op alone)
>>> for idx in vd.shard(batches):       # this rank's batches, round-robin
...     acc.update(...)
>>> vd.all_reduce_state_(acc_state)     # one all_reduce of every sum and count
>>> if vd.is_main():
...     result.save("out.npz")

Without ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment and no process group)
every helper degrades to the single-process case: ``world() == 1``, ``shard`` returns
every batch and the reductions do nothing.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch

__all__ = [
    "all_gather_object",
    "all_reduce_state_",
    "all_reduce_sum_",
    "barrier",
    "check_device",
    "broadcast_object",
    "destroy",
    "device_for_rank",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "rank",
    "resolve_device",
    "session",
    "shard",
    "shard_batches",
    "world",
]

T = TypeVar("T")
_OWNED = False  # True when vitlens created the process group (and must destroy it)


def _dist():
    import torch.distributed as dist

    return dist


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """The number of ranks (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this is rank 0, the one that writes results, caches and figures."""
    return rank() == 0


def init_from_env(backend: str | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    Does nothing (and returns False) when they are absent or ``WORLD_SIZE`` is 1; returns
    True when a group is already initialised (by vitlens or by the caller). A group that
    vitlens creates is destroyed at interpreter exit, or by :func:`destroy`.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; by default NCCL when CUDA is available, else gloo.
        timeout_s: How long collectives wait for the other ranks.

    Returns:
        Whether this process now runs with more than one rank.

    Raises:
        RuntimeError: ``torch.distributed`` is unavailable, or ``MASTER_ADDR``/``MASTER_PORT``
            are missing while ``WORLD_SIZE`` > 1.
    """
    global _OWNED
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if not dist.is_available():
        msg = ("WORLD_SIZE > 1 but this torch build has no torch.distributed; run a single "
               "process, or install a torch with distributed support")
        raise RuntimeError(msg)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        msg = (f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set; launch with "
               "'torchrun --nproc-per-node N ...', which sets them")
        raise RuntimeError(msg)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    if not _OWNED:
        atexit.register(destroy)
    _OWNED = True
    return dist.get_world_size() > 1


def destroy() -> None:
    """Destroy the process group if vitlens created it (idempotent)."""
    global _OWNED
    dist = _dist()
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


@contextmanager
def session(backend: str | None = None) -> Iterator[bool]:
    """``init_from_env`` on entry; on exit, destroy the group if this call created it."""
    created = not (_dist().is_available() and _dist().is_initialized())
    active = init_from_env(backend)
    try:
        yield active
    finally:
        if created:
            destroy()


def device_for_rank(device: str | torch.device | None = None) -> torch.device:
    """The device this rank computes on.

    ``None`` means CUDA when available, else CPU. Under a process group a bare ``"cuda"``
    becomes ``cuda:LOCAL_RANK``, so each rank of a node uses its own GPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank() % max(
            torch.cuda.device_count(), 1))))
    return device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available; under ``torchrun`` CUDA means this rank's GPU.

    Raises:
        ValueError: ``device`` is not a torch device or not available here
            (:func:`check_device`).
    """
    check_device(device)
    return device_for_rank(device)


def check_device(device: Any, *, flag: str | None = None) -> None:
    """Refuse a device this machine does not have, before any model is moved there.

    Args:
        device: ``None`` (the best device there is), a string or a :class:`torch.device`.
        flag: The command-line flag (``"--device"``) when the value came from one; the
            message then spells the fix as a flag.

    Raises:
        ValueError: not a torch device, or one that is not available here.
    """
    if device is None:
        return
    arg = f"{flag} {str(device)!r}" if flag else f"device={str(device)!r}"
    cpu = f"{flag} cpu" if flag else "device='cpu'"
    best = f"leave {flag} out" if flag else "pass device=None"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        msg = f"{arg} is not a torch device ({err}); use cpu, cuda, cuda:N or mps"
        raise ValueError(msg) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            msg = (f"{arg}: no CUDA GPU is available here (torch.cuda.is_available() is "
                   f"False); use {cpu}, or {best} to pick the best device there is")
            raise ValueError(msg)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            msg = (f"{arg}: this machine has {count} CUDA device(s), cuda:0 to "
                   f"cuda:{count - 1}; pick one of them, or {best}")
            raise ValueError(msg)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        msg = f"{arg}: Apple MPS is not available here; use {cpu}, or {best}"
        raise ValueError(msg)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world()``-th one, starting at ``rank()``.

    Assigning whole batches round-robin keeps each batch exactly as in a single process,
    so the per-batch statistics are the same and only the order of the final sum changes.
    """
    return list(items[rank()::world()])


def shard_batches(batches: Sequence[T], *, what: str = "this analysis",
                  fix: str = "pass a smaller batch_size (or more images)") -> list[T]:
    """This rank's batches under a process group with several ranks; every batch otherwise.

    Joins the process group ``torchrun`` describes in the environment first (as
    :func:`vitlens.cka` does), so a script runs alone or under ``torchrun`` unchanged.

    Raises:
        ValueError: fewer batches than ranks (a rank would have nothing to add), naming
            ``fix``.
    """
    init_from_env()
    if not is_distributed():
        return list(batches)
    if len(batches) < world():
        msg = (f"{what} has {len(batches)} batches for {world()} ranks, so some ranks would get "
               f"none; {fix}, or start fewer ranks")
        raise ValueError(msg)
    return shard(batches)


def _backend_device(tensor: torch.Tensor) -> torch.device:
    """Where a collective on ``tensor`` must run for the current backend."""
    if _dist().get_backend() == "nccl":
        if tensor.device.type == "cuda":
            return tensor.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; returns it. A no-op with one rank.

    Works on any device: a tensor on a device the backend cannot reduce (a CPU tensor under
    NCCL, a CUDA tensor under gloo) is copied over and back.
    """
    if not is_distributed():
        return tensor
    where = _backend_device(tensor)
    if where == tensor.device and tensor.is_contiguous():
        _dist().all_reduce(tensor)
        return tensor
    buf = tensor.detach().to(where).contiguous()
    _dist().all_reduce(buf)
    tensor.copy_(buf.to(tensor.device))
    return tensor


def all_reduce_state_(state: Mapping[str, Any]) -> dict[str, Any]:
    """Sum every tensor and number of an accumulator state over all ranks, in ONE call.

    Every tensor (any dtype, any device) and every int or float in ``state`` (nested dicts
    included) is packed into one float64 vector, reduced with one ``all_reduce`` and
    unpacked; other entries (names, flags) are left as they are. Integers are exact up to
    2**53. Use it for states whose entries are all sums or counts.

    Returns:
        A new state of the same structure with the reduced values.
    """
    if not is_distributed():
        return dict(state)
    leaves: list[tuple[tuple[str, ...], Any]] = []
    _collect(state, (), leaves)
    if not leaves:
        return dict(state)
    flat = torch.cat([torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu()
                      if not isinstance(v, torch.Tensor)
                      else v.detach().to("cpu", torch.float64).reshape(-1) for _, v in leaves])
    all_reduce_sum_(flat)
    out = _copy_tree(state)
    offset = 0
    for path, value in leaves:
        size = value.numel() if isinstance(value, torch.Tensor) else 1
        chunk = flat[offset:offset + size]
        offset += size
        if isinstance(value, torch.Tensor):
            new = chunk.reshape(value.shape).to(value.dtype).to(value.device)
        elif isinstance(value, int):
            new = int(round(float(chunk)))
        else:
            new = float(chunk)
        _set(out, path, new)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _collect(tree: Mapping[str, Any], path: tuple[str, ...], out: list) -> None:
    for key in sorted(tree, key=str):  # the same order on every rank
        value = tree[key]
        if isinstance(value, Mapping):
            _collect(value, (*path, key), out)
        elif isinstance(value, torch.Tensor) or _is_number(value):
            out.append(((*path, key), value))


def _copy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (pickled; for small objects and flags)."""
    if not is_distributed():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (pickled; for small objects)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world()
    _dist().all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (a no-op with one rank)."""
    if is_distributed():
        _dist().barrier()
