"""The effective configuration of a running process: one immutable snapshot behind one reference
(STYLE item 5). A reload swaps the reference; subscribers hear of each swap and apply what they
can change at runtime (the roles wire them: worker concurrency, retry defaults, log level...)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from taskd.config.settings import Settings
from taskd.config.snapshot import Snapshot

log = logging.getLogger("taskd.config")

Subscriber = Callable[[Settings, Settings], None]


class LiveConfig:
    """Holds ``current``; :meth:`swap` replaces it whole and then notifies the subscribers."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._current = snapshot
        self._subscribers: list[Subscriber] = []

    @classmethod
    def fixed(cls, settings: Settings) -> LiveConfig:
        """A holder for settings that no reloader will change (tests, embedded use)."""
        return cls(Snapshot(settings))

    @property
    def current(self) -> Snapshot:
        return self._current

    @property
    def settings(self) -> Settings:
        return self._current.settings

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(old, new)`` after every swap; returns a function that unsubscribes."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def swap(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` current, then tell the subscribers. A failing subscriber is logged
        and does not stop the others: the snapshot is in place either way."""
        old, self._current = self._current, snapshot
        for fn in list(self._subscribers):
            try:
                fn(old.settings, snapshot.settings)
            except Exception:
                log.exception("applying the reloaded configuration failed in %r", fn)
