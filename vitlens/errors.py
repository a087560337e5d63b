"""Exceptions raised by vitlens. Each message names the problem and how to fix it."""

from __future__ import annotations


class VitlensError(Exception):
    """Base class for vitlens errors."""


class WeightsUnavailableError(VitlensError, RuntimeError):
    """Pretrained weights could not be fetched (offline, or the hub is unreachable)."""


class CaptureError(VitlensError, RuntimeError):
    """A requested capture point did not fire, or produced unusable activations."""


class ImageError(VitlensError, ValueError):
    """An image source could not be read or does not fit the request."""


class NotApplicableError(VitlensError, ValueError):
    """An analysis was asked of a model it does not apply to."""
