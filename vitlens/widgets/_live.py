"""Background computations of the explorers: one at a time, debounced, cancelled at exit.

A newer request supersedes the one in flight: the old one is told to stop (it stops after
its current batch) and the new one starts when it has, in its own daemon thread, so the
kernel never blocks. Views are only updated through :meth:`BackgroundRuns.publish`, which
refuses updates from a superseded or cancelled run, so a stale partial matrix can never
overwrite a newer one.

At interpreter exit every run still in flight is cancelled and joined (an ``atexit``
handler): a script that ends with an explorer exits cleanly instead of aborting while a
worker thread is inside PyTorch.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from typing import Any

_LIVE: weakref.WeakSet[BackgroundRuns] = weakref.WeakSet()

#: Seconds an explorer waits after the last control change before it recomputes.
DEBOUNCE_S = 0.2


class BackgroundRuns:
    """Runs ``target(cancel, *args)`` in daemon threads, newest request wins.

    Args:
        name: Thread name (shows in debuggers and ``threading.enumerate()``).
        debounce: Seconds :meth:`later` waits before calling its function.
    """

    def __init__(self, name: str, debounce: float = DEBOUNCE_S) -> None:
        self.name = name
        self.debounce = debounce
        self.lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._cancel = threading.Event()
        self._owned: threading.Event | None = None  # the cancel event of the newest thread
        self.superseded = 0  # runs stopped because a newer one started
        _LIVE.add(self)

    # ----- starting and stopping -----
    def start(self, target: Callable[..., Any], *args: Any,
              on_skip: Callable[[threading.Event], Any] | None = None) -> threading.Event:
        """Stop the run in flight and start ``target(cancel, *args)`` once it has ended.

        If this run is cancelled while it waits for the previous one to end, ``target`` is
        not called; ``on_skip(cancel)`` is, so that whoever handed the run its controls can
        take them back.
        """
        with self.lock:
            self._stop_timer()
            self._count_superseded()
            self._cancel.set()
            prev, cancel = self._thread, threading.Event()
            self._cancel = self._owned = cancel

            def body() -> None:
                if prev is not None:
                    prev.join()
                if not cancel.is_set():
                    target(cancel, *args)
                elif on_skip is not None:
                    on_skip(cancel)

            self._thread = threading.Thread(target=body, name=self.name, daemon=True)
            self._thread.start()
        return cancel

    def later(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` after :attr:`debounce` seconds, unless called again before then.

        ``fn`` runs holding :attr:`lock`, and only if no :meth:`cancel`, :meth:`supersede`,
        :meth:`start` or newer :meth:`later` came first: a Cancel pressed just as the delay
        ends wins, instead of the call starting a run after it.
        """
        with self.lock:
            self._stop_timer()
            timer = threading.Timer(self.debounce, lambda: self._fire(timer, fn))
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _fire(self, timer: threading.Timer, fn: Callable[[], Any]) -> None:
        with self.lock:
            if self._timer is timer:  # not stopped while it waited for the lock
                fn()

    def cancel(self) -> bool:
        """Stop the pending debounced call and tell the run in flight to stop.

        Returns:
            True if this stopped something whose owner still has to hear of it: a pending
            debounced call (no run reports it), or the newest run (it ends after its
            current step). False if only a superseded run, or nothing, was left.
        """
        with self.lock:
            dropped = self.pending
            newest = self.running and self._cancel is self._owned and not self._cancel.is_set()
            self._stop_timer()
            self._cancel.set()
            return dropped or newest

    def supersede(self) -> None:
        """Stop the pending call and the run in flight, which then updates nothing more.

        Used when a newer answer (a cached result) is shown without starting a run.
        """
        with self.lock:
            self._stop_timer()
            self._count_superseded()
            self._cancel.set()
            self._cancel = threading.Event()

    def _count_superseded(self) -> None:
        if self.running and self._cancel is self._owned and not self._cancel.is_set():
            self.superseded += 1

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ----- state -----
    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    @property
    def pending(self) -> bool:
        """A debounced call is waiting to fire."""
        t = self._timer
        return t is not None and t.is_alive()

    def is_current(self, cancel: threading.Event) -> bool:
        """``cancel`` belongs to the newest run (it was not superseded)."""
        return cancel is self._cancel

    def publish(self, cancel: threading.Event, update: Callable[[], Any]) -> bool:
        """Apply ``update()`` unless the run owning ``cancel`` was stopped; True if applied."""
        with self.lock:
            if cancel.is_set():
                return False
            update()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pending call has fired and no run is in flight (or ``timeout``)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(end - time.monotonic(), 0.0)
            timer = self._timer
            if timer is not None and timer.is_alive():
                timer.join(left)
                if timer.is_alive():
                    return False
                time.sleep(0.01)  # let the fired call start its thread
                continue
            t = self._thread
            if t is None:
                return True
            t.join(left)
            if t.is_alive():
                return False
            if t is self._thread and not self.pending:
                return True
            if end is not None and time.monotonic() >= end:
                return False

    def shutdown(self, timeout: float | None = None) -> bool:
        """Cancel and wait for the run in flight (used at interpreter exit)."""
        self.cancel()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()


@atexit.register
def _stop_all_runs() -> None:
    """At exit, stop every explorer's computation before the interpreter tears down."""
    for runs in list(_LIVE):
        runs.shutdown(timeout=120)
