"""``load_model``: any timm name, a local weights file, or the bundled offline zoo."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsUnavailableError

ZOO_PREFIX = "vitlens/"


def _check_timm_name(name: str) -> None:
    import timm

    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return
    candidates = timm.list_models()
    close = difflib.get_close_matches(arch, candidates, n=5, cutoff=0.6)
    hint = f" Close matches: {close}." if close else ""
    msg = (
        f"unknown model {name!r}: not a timm architecture nor a vitlens zoo model.{hint} "
        "Use a name from timm.list_models() or 'vitlens/<name>' with a name from "
        "vitlens.zoo.names()."
    )
    raise KeyError(msg)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file or a torch state dict (``weights_only=True``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable weights file; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"weights file {str(path)!r} does not exist; pass the path of a local .safetensors or .pth file"
        raise FileNotFoundError(msg)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign files raise many different types
        msg = (
            f"could not read weights file {str(path)!r} ({type(err).__name__}: {err}). "
            "Expected a safetensors file or a torch state dict saved with torch.save; "
            "re-download or re-save it."
        )
        raise ValueError(msg) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"weights file {str(path)!r} does not hold a state dict of tensors"
        raise ValueError(msg)
    return state


def load_model(
    name: str | nn.Module,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create a model in eval mode, by timm name or from the bundled zoo.

    Args:
        name: A timm model name (``"vit_base_patch16_224.augreg_in21k"``), ``"vitlens/<zoo
            name>"`` for the offline zoo, or a module (returned as is, in eval mode).
        pretrained: Load pretrained weights from the hub (ignored for the zoo, which is always
            trained, and when ``weights`` is given).
        weights: A local weights file (safetensors or torch state dict). For augreg ViTs and
            BiT this works too: the file replaces the hub source (``custom_load=False``).
        **timm_kwargs: Passed to ``timm.create_model`` (``num_classes``, ``img_size``, ...).

    Raises:
        KeyError: unknown model name; the message lists close matches.
        WeightsUnavailableError: the hub cannot be reached; the message says how to pass
            ``weights=``.
    """
    if isinstance(name, nn.Module):
        return name.eval()
    if not isinstance(name, str):
        msg = f"model must be a name or a torch.nn.Module, got {type(name).__name__}"
        raise TypeError(msg)
    model = _load(name, pretrained=pretrained, weights=weights, **timm_kwargs)
    # A readable label for results: the name asked for, and the weights file if one was given.
    label = name if weights is None else f"{name} ({Path(weights).name})"
    object.__setattr__(model, "vitlens_name", label)
    return model


def _load(name: str, *, pretrained: bool, weights: str | os.PathLike | None,
          **timm_kwargs: Any) -> nn.Module:
    if name.startswith(ZOO_PREFIX):
        return _load_zoo(name[len(ZOO_PREFIX):], weights)
    import timm

    _check_timm_name(name)
    if weights is not None:
        model = timm.create_model(name, pretrained=False, **timm_kwargs)
        load_weights_into(model, weights)
        return model.eval()
    if not pretrained:
        return timm.create_model(name, pretrained=False, **timm_kwargs).eval()
    if not ({"pretrained_cfg", "pretrained_cfg_overlay"} & timm_kwargs.keys()):
        reason = _why_no_download(name)
        if reason is not None:  # fail now, not after a minute of the hub client's retries
            raise WeightsUnavailableError(_unavailable_message(name, reason))
    try:
        model = timm.create_model(name, pretrained=True, **timm_kwargs)
    except Exception as err:
        if not _looks_like_hub_failure(err):
            raise
        reason = f"they could not be downloaded ({type(err).__name__}: {err})"
        raise WeightsUnavailableError(_unavailable_message(name, reason)) from err
    return model.eval()


def _unavailable_message(name: str, reason: str) -> str:
    return (
        f"pretrained weights for {name!r} are not available: {reason}. Download the weights "
        "file on a machine with internet (for example with huggingface_hub) and pass it: "
        f"vitlens.load_model({name!r}, weights='/path/to/model.safetensors'); or use the "
        "offline zoo, vitlens.load_model('vitlens/vit-cls')."
    )


_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, now or at import."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - timm requires huggingface_hub
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host opens within a few seconds.

    The connection (name lookup included) runs in a daemon thread, so a hanging DNS lookup
    costs at most ``_PROBE_TIMEOUT_S``. Behind a proxy a direct connection proves nothing,
    so the hub counts as reachable and the download is left to try.
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                       "http_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urlsplit(url)
    if not parts.hostname:
        return True
    port = parts.port or (80 if parts.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S + 0.5)
    return bool(ok)


def _why_no_download(name: str) -> str | None:
    """Why the pretrained weights of ``name`` can't come, or None to let timm load them.

    None whenever a local copy exists (the Hugging Face or torch hub cache), the source is
    not a download, or anything about timm's config is unexpected: this check only saves
    time, it never blocks a load timm could do.
    """
    try:
        from timm.models._builder import _resolve_pretrained_source
        from timm.models._registry import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is None:
            return None
        source, loc = _resolve_pretrained_source(cfg.to_dict())
        if source == "hf-hub":
            from huggingface_hub import constants

            repo = (loc[0] if isinstance(loc, tuple | list) else loc).split("@", 1)[0]
            snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
            if any((snapshots / "snapshots").glob("*/*")):
                return None
            url = constants.ENDPOINT
            where = f"the Hugging Face hub ({repo})"
        elif source == "url":
            if (Path(torch.hub.get_dir()) / "checkpoints" / Path(str(loc)).name).is_file():
                return None
            url, where = str(loc), str(loc)
        else:
            return None
    except Exception:  # noqa: BLE001 - private timm API changed: let timm try
        return None
    if _hub_offline():
        return f"HF_HUB_OFFLINE is set and no local copy is cached (source: {where})"
    if not _reachable(url):
        return f"{url} cannot be reached and no local copy is cached (source: {where})"
    return None


def load_weights_into(model: nn.Module, weights: str | os.PathLike) -> nn.Module:
    """Load a local weights file into a timm model.

    The file goes through the architecture's timm checkpoint filter (which converts original
    checkpoints and resizes position embeddings), then loads strictly. When only the
    classifier differs (a 21k-class file into a model built with another ``num_classes``),
    the classifier is left as initialised, with a warning.

    Raises:
        ValueError: the file does not match the architecture; the message lists the keys.
    """
    import sys
    import warnings

    state = read_state_dict(weights)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception:  # noqa: BLE001 - filters expect their own formats; fall back to raw
            pass
    own = model.state_dict()
    head = str((getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head")
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = mismatched + missing + unexpected
    if problems and all(k.startswith(head) for k in problems):
        warnings.warn(f"{str(weights)!r}: classifier {head!r} does not match this model's "
                      "num_classes and was left as initialised", stacklevel=3)
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        model.load_state_dict(state, strict=False)
        return model
    if problems:
        msg = (f"weights file {str(weights)!r} does not match {type(model).__name__}: "
               f"{len(missing)} missing keys {missing[:4]}, {len(unexpected)} unexpected "
               f"{unexpected[:4]}, {len(mismatched)} with other shapes {mismatched[:4]}. Pass "
               "the timm name and kwargs the file was saved with.")
        raise ValueError(msg)
    model.load_state_dict(state, strict=True)
    return model


def _looks_like_hub_failure(err: Exception) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    hub = {
        "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "HTTPError",
        "ConnectTimeout", "ReadTimeout", "ProxyError", "SSLError", "MaxRetryError",
        "NewConnectionError", "HfHubHTTPError", "RepositoryNotFoundError", "ConnectError",
        "TimeoutException", "gaierror", "URLError", "ProtocolError",
    }
    return bool(names & hub) or isinstance(err, OSError | RuntimeError) and (
        "offline" in str(err).lower() or "connect" in str(err).lower()
        or "internet" in str(err).lower() or "huggingface" in str(err).lower()
    )


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _load_zoo(zoo_name: str, weights: str | os.PathLike | None) -> nn.Module:
    from ..zoo import registry

    if weights is None:
        return registry.load(zoo_name)
    model = registry.create(zoo_name)
    return load_weights_into(model, weights).eval()
