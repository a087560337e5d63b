"""The run controls every explorer shares: Run, Cancel, the status line and the run they drive.

An explorer that computes in the background mixes in :class:`RunControls`. It calls
:meth:`RunControls._init_run_controls` before laying out its widgets, starts work with
:meth:`RunControls._begin`, and lets :meth:`RunControls._outcome` show what the worker
thread computed (or the error) through :meth:`~._live.BackgroundRuns.publish`, so a
cancelled or superseded run never draws anything. :class:`CancellableImages` stops an
analysis that reads images batch by batch as soon as its run is cancelled.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..datasets.source import ImageSource
from ._live import BackgroundRuns


class RunCancelled(Exception):
    """A background computation was cancelled or superseded (raised between batches)."""


class CancellableImages(ImageSource):
    """An image source that stops the analysis reading it once ``cancel`` is set.

    The analyses read their images batch by batch, so a cancelled run ends after the batch
    in flight (:class:`RunCancelled`) instead of running to the end unseen.
    """

    def __init__(self, source: ImageSource, cancel: threading.Event) -> None:
        self.source, self.cancel = source, cancel
        self.name = getattr(source, "name", "images")
        self.preprocessed = getattr(source, "preprocessed", False)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Any:
        if self.cancel.is_set():
            raise RunCancelled("cancelled")
        return self.source[i]

    def _item_bytes(self, i: int) -> bytes:  # the cache key reads the source's own bytes
        return self.source._item_bytes(i)

    def fingerprint(self) -> str:
        return self.source.fingerprint()


class RunControls:
    """Mixin: the Run and Cancel buttons, the status line and the background runs behind them.

    ``_busy`` is true from a request until its result (or error) is shown; :meth:`cancel`
    ends it and calls :meth:`_cancelled`, where the explorer empties its views and says so.
    An explorer whose runs report their own end (``SimilarityExplorer``) overrides
    :meth:`cancel`.
    """

    #: Seconds a notebook's display waits for the run in flight (``None``: it does not wait).
    repr_wait_s: float | None = None
    _busy: bool

    def _init_run_controls(self, name: str, *, tooltip: str | None = None,
                           primary: bool = False) -> None:
        """Make the buttons, the status line and the :class:`BackgroundRuns` named ``name``.

        Args:
            tooltip: The Run button's tooltip.
            primary: A highlighted Run button, enabled from the start, in the buttons' own
                width (the default: narrow buttons, both disabled until a run is requested).
        """
        self._runs = BackgroundRuns(name)
        self._busy = False  # a computation was requested and has not shown its result yet
        self.status_text = ""
        if primary:
            self.run_button = W.Button(description="Run", button_style="primary", icon="play")
            self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        else:
            self.run_button = W.Button(description="Run", icon="play", disabled=True,
                                       layout=W.Layout(width="80px"))
            self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True,
                                          layout=W.Layout(width="90px"))
        if tooltip is not None:
            self.run_button.tooltip = tooltip
        self.status = W.HTML("")
        self.status.add_class("vitlens-status")

    # ----- state -----
    @property
    def running(self) -> bool:
        """A run is in flight or a debounced one is about to start."""
        return self._runs.running or self._runs.pending

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background computation ends; True if it did within ``timeout``."""
        return self._runs.wait(timeout)

    def _can_run(self) -> bool:
        """Whether Run has something to compute when no run is in flight."""
        return True

    def _buttons(self, *, running: bool) -> None:
        self.run_button.disabled = running or not self._can_run()
        self.cancel_button.disabled = not running

    def _set_status(self, text: str) -> None:
        self.status_text = text
        self.status.value = f"<span style='font-size:12px;color:#555'>{html.escape(text)}</span>"

    # ----- starting, cancelling, finishing -----
    def _begin(self, target: Callable[..., Any], *args: Any, status: str,
               debounce: bool = False) -> None:
        """Start ``target(cancel, *args)`` in the background (after the debounce delay if
        ``debounce``); the status says ``status`` and only Cancel is enabled meanwhile."""
        self._busy = True
        self._set_status(status)
        self._buttons(running=True)
        if debounce:
            self._runs.later(lambda: self._runs.start(target, *args))
        else:
            self._runs.start(target, *args)

    def cancel(self) -> None:
        """Stop the computation in flight (or about to start); nothing it computes is shown."""
        with self._runs.lock:
            if not self._busy:
                return
            self._runs.cancel()
            self._busy = False
            self._cancelled()
            self._buttons(running=False)

    def _cancelled(self) -> None:
        """After a Cancel: the explorer's views and status say that nothing is shown."""
        raise NotImplementedError

    def _finish(self, show: Callable[[], Any], status: str) -> None:
        """The request is answered: ``show()``, then the status, then Run enabled again."""
        self._busy = False
        show()
        self._set_status(status)
        self._buttons(running=False)

    def _outcome(self, cancel: threading.Event, compute: Callable[[], Any],
                 show: Callable[[Any], Any], done: str | Callable[[Any], str],
                 failed: str) -> None:
        """On the worker thread: ``compute()``, then show its value (status ``done``, or
        ``done(value)``) or the error (status ``failed``), unless the run owning ``cancel``
        was stopped.

        A :class:`RunCancelled` shows nothing; an error while drawing is shown like one
        while computing, so the explorer stays usable.
        """
        runs = self._runs
        try:
            value = compute()
            status = done if isinstance(done, str) else done(value)
            runs.publish(cancel, lambda: self._finish(lambda: show(value), status))
        except RunCancelled:
            pass
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            runs.publish(cancel, lambda err=err: self._finish(lambda: self._show_error(err),
                                                                 failed))

    def _show_error(self, err: BaseException) -> None:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # A notebook's output (text and static picture) shows the result, not "computing".
        if self.repr_wait_s is not None:
            self.wait(self.repr_wait_s)
        return super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]


__all__ = ["CancellableImages", "RunCancelled", "RunControls"]
