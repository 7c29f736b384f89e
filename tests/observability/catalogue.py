"""The metric catalogue as README documents it and as taskd/metrics.py declares it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import taskd.metrics

ROOT = Path(__file__).resolve().parents[2]
NOT_YET = "(emitted once"
_ROW = re.compile(r"\| `(taskd_[a-z_]+)` \| (counter|gauge|histogram) \|([a-z, ]*)\| (.+) \|")


@dataclass(frozen=True)
class Documented:
    name: str
    type: str
    labels: tuple[str, ...]
    meaning: str

    @property
    def emitted_now(self) -> bool:
        """False for metrics of features that have not landed (their row says so)."""
        return NOT_YET not in self.meaning


def readme_metrics() -> dict[str, Documented]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Observability", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = _ROW.fullmatch(line.strip())
        if m:
            labels = tuple(x.strip() for x in m[3].split(",") if x.strip())
            rows[m[1]] = Documented(m[1], m[2], labels, m[4])
    return rows


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name (as scraped: counters with _total) -> (type, labels, help)."""
    out = {}
    for obj in vars(taskd.metrics).values():
        if isinstance(obj, MetricWrapperBase):
            kind = obj._type
            name = obj._name + ("_total" if kind == "counter" else "")
            out[name] = (kind, tuple(obj._labelnames), obj._documentation)
    return out


def not_yet_emitted() -> set[str]:
    return {name for name, doc in readme_metrics().items() if not doc.emitted_now}
