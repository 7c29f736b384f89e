"""The notifier role: deliver the notification outbox (email and signed webhooks); and, for
every role, the configured notification defaults that task completions write with them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskd.config.settings import Settings
from taskd.roles.resources import Resources
from taskd.services.notifier import Notifier
from taskd.store.notifications import NotifyStore, defaults_from_rules

log = logging.getLogger("taskd.notifier")


def follow_defaults(resources: Resources) -> Callable[[], None]:
    """Give the task store the configured defaults (``notify.defaults``) now and after every
    reload; returns the unsubscribe function."""
    store = resources.store
    store.notify_defaults = defaults_from_rules(resources.settings.notify.defaults)

    def apply(old: Settings, new: Settings) -> None:
        if new.notify.defaults != old.notify.defaults:
            store.notify_defaults = defaults_from_rules(new.notify.defaults)

    return resources.live.subscribe(apply)


async def run(resources: Resources, stop: asyncio.Event) -> None:
    s = resources.settings
    if not s.notify.webhook.secret:
        log.warning("notify.webhook.secret is empty: webhook signatures prove nothing; set one")
    notifier = Notifier(NotifyStore(resources.pool), s.notify, s.retry)

    def apply(old: Settings, new: Settings) -> None:
        notifier.settings, notifier.retry = new.notify, new.retry

    unsubscribe = resources.live.subscribe(apply)
    try:
        await notifier.serve(stop)
    finally:
        unsubscribe()
        await notifier.close()
