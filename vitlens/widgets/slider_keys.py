"""``SliderKeys``: an invisible view that lets arrow keys reach an explorer's sliders."""

from __future__ import annotations

import anywidget

from ._base import esm_source


class SliderKeys(anywidget.AnyWidget):
    """Put one in an explorer: its sliders then answer the arrow keys in Notebook 7 too.

    Notebook front ends bind arrow keys in command mode (move between cells), and their
    shortcut handler takes the key before a focused slider sees it. This view marks every
    slider of the explorer it sits in (an element with class ``vitlens-explorer``) with
    ``data-lm-suppress-shortcuts``, which Lumino's shortcut handler respects.
    """

    _esm = esm_source("slider_keys.js")

    def __repr__(self) -> str:
        return "SliderKeys()"
