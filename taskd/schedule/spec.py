"""A schedule declared in the configuration (``schedules:`` in YAML). Pure.

The promoter upserts these by (tenant, name) when it starts; through the API they are
read-only (trigger and backfill still work). The timing and policy are checked here, when the
configuration loads; the task template is checked by the API's rules when the promoter starts.

```yaml
schedules:
  - name: nightly-report
    tenant: reports            # default: "default"
    cron: "0 2 * * *"          # or every: 3600
    timezone: Europe/London
    task: {type: report.build, queue: reports, payload: {kind: nightly}}
    overlap: skip              # skip | buffer_one | allow | cancel_previous
    catchup: latest            # latest | none | all
```
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from taskd.schedule.policy import Policy
from taskd.schedule.timing import build_timing

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class ScheduleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    tenant: str = "default"
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    task: dict[str, Any]
    overlap: str = "skip"
    catchup: str = "latest"
    catchup_window: float = 3600.0
    max_catchup_runs: int = 10
    jitter: float = 0.0
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"schedules[].name {self.name!r} must match {_NAME.pattern}")
        if not self.tenant or "\x00" in self.tenant:
            raise ValueError(f"schedules[{self.name}].tenant must be a non-empty name")
        try:
            build_timing(
                cron=self.cron,
                every=self.every,
                timezone=self.timezone,
                anchor=datetime(1970, 1, 1, tzinfo=UTC),
                start_at=self.start_at,
                end_at=self.end_at,
            )
            Policy(
                self.overlap,  # type: ignore[arg-type]  # checked by Policy.check
                self.catchup,  # type: ignore[arg-type]
                self.catchup_window,
                self.max_catchup_runs,
                self.jitter,
            ).check()
        except ValueError as e:
            raise ValueError(f"schedules[{self.name}].{e}") from e
        if "type" not in self.task:
            raise ValueError(f"schedules[{self.name}].task needs a type")

    def fields(self) -> dict[str, Any]:
        """The schedule's fields as the API takes them, without ``tenant``."""
        out = {f: getattr(self, f) for f in self.__struct_fields__ if f != "tenant"}
        return out
