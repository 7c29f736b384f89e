"""Publish the dead-letter outbox to the configured sink (DESIGN §5, Final failure).

A row leaves the outbox only when the sink confirmed it (Kafka acks=all, RabbitMQ publisher
confirms). A crash between the confirmation and the commit publishes the row again on the next
pass: consumers dedupe on the task id (the Kafka key, the RabbitMQ message id). A sink outage
marks the claimed rows with a growing delay, and the backlog gauge shows what waits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from taskd import metrics
from taskd.api.representation import task_view
from taskd.config.settings import DlqSettings, RetrySettings
from taskd.dlq.base import DeadLetter, DeadLetterSink
from taskd.errors import SinkUnavailable
from taskd.store.outbox import OutboxStore

log = logging.getLogger("taskd.dlq")
_encoder = msgspec.json.Encoder()


class DeadLetterDoc(msgspec.Struct):
    event: str
    task: Any


def dead_letter(row: Any, history: list[Any], retry: RetrySettings) -> DeadLetter:
    """The message of API.md (Dead letters) for one FAILED task."""
    view = task_view(
        row, default_max_retries=retry.max_retries, default_timeout=retry.timeout, history=history
    )
    value = _encoder.encode(DeadLetterDoc("task.dead_lettered", view))
    headers = (("taskd-tenant", row["tenant"]), ("taskd-type", row["type"]))
    return DeadLetter(str(row["id"]), value, headers)


@dataclass
class DlqPublisher:
    outbox: OutboxStore
    sink: DeadLetterSink
    settings: DlqSettings
    retry: RetrySettings

    async def run_once(self) -> int:
        """Publish one batch of due dead letters; returns how many were published."""
        failure: SinkUnavailable | None = None
        async with self.outbox.claim(self.settings.batch_size) as claim:
            ids = [r["outbox_id"] for r in claim.rows]
            if ids:
                letters = [
                    dead_letter(r, claim.attempts.get(str(r["id"]), []), self.retry)
                    for r in claim.rows
                ]
                try:
                    await self.sink.publish(letters)
                except SinkUnavailable as e:
                    failure = e
                    s = self.settings
                    await claim.failed(ids, str(e), s.retry_base_seconds, s.retry_max_seconds)
                else:
                    await claim.published(ids)
                    for r in claim.rows:
                        metrics.TASKS_DEAD_LETTERED.labels(r["queue"], r["type"]).inc()
        metrics.DLQ_BACKLOG.set(await self.outbox.backlog())
        if failure is not None:
            metrics.DLQ_PUBLISH_FAILURES.inc()
            raise failure  # the loop logs the outage once and backs off
        metrics.DLQ_PUBLISHED.inc(len(ids))
        if ids:
            log.info("published %d dead letters", len(ids))
        return len(ids)
