"""sql/schedules.sql holds every query the schedule store names, and only well-formed blocks."""

from __future__ import annotations

import inspect
import re

import taskd.store.schedules as schedules_module
from taskd.store.queries import load


def test_every_query_the_schedule_store_uses_exists() -> None:
    source = inspect.getsource(schedules_module)
    used = set(re.findall(r'S\["(\w+)"\]', source))
    assert used <= set(load("schedules.sql")), used - set(load("schedules.sql"))
    assert set(re.findall(r'D\["(\w+)"\]', source)) <= set(load("dags.sql"))
    for name, sql in load("schedules.sql").items():
        assert re.fullmatch(r"[a-z_]+", name), name
        assert sql and not sql.endswith(";") and "-- name:" not in sql, name
        assert name in used, f"{name} is never used"
