"""Read the process's own Prometheus registry in tests."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.helpers import eventually


def value(name: str, **labels: str) -> float:
    """A sample's current value; 0 when the series does not exist yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """How much samples moved since this object was made (counters are process-global)."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self.start = {self._key(n, lb): value(n, **lb) for n, lb in samples}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    def __call__(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self.start.get(self._key(name, labels), 0.0)


async def moved(delta: Delta, name: str, by: float, timeout: float = 10.0, **labels: str) -> None:
    """Wait until the sample moved by at least ``by`` (metrics follow the event they count,
    e.g. outcome counters move after the write that a test's wait_terminal sees)."""

    async def check() -> bool:
        return delta(name, **labels) >= by

    await eventually(check, timeout=timeout)
    assert delta(name, **labels) == by, (name, labels, delta(name, **labels))
