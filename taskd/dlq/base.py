"""What every dead-letter sink receives and must do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message: key = the task id, value = the JSON document of API.md (Dead letters)."""

    task_id: str
    value: bytes
    headers: tuple[tuple[str, str], ...]


class DeadLetterSink(Protocol):
    async def start(self) -> None:
        """Connect. May raise SinkUnavailable; publish() retries the connection later."""

    async def publish(self, letters: list[DeadLetter]) -> None:
        """Deliver every letter durably (acknowledged by the broker) or raise SinkUnavailable."""

    async def close(self) -> None: ...
