"""The /v1/schedules part of the OpenAPI document (taskd/api/openapi.py assembles it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskd.api.schedule_schemas import (
    BackfillRequest,
    BackfillResult,
    FireList,
    FireView,
    ScheduleList,
    SchedulePatch,
    ScheduleSubmission,
    ScheduleView,
)

SCHEMAS: list[Any] = [
    ScheduleSubmission,
    SchedulePatch,
    ScheduleView,
    ScheduleList,
    FireView,
    FireList,
    BackfillRequest,
    BackfillResult,
]

Op = Callable[..., dict[str, Any]]
Ref = Callable[[str], dict[str, str]]
Json = Callable[[dict[str, Any]], dict[str, Any]]
Query = Callable[..., dict[str, Any]]


def schedule_paths(op: Op, ref: Ref, json: Json, query: Query) -> dict[str, Any]:
    sid = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "schedule id",
        "schema": {"type": "string", "format": "uuid"},
    }
    one = {"200": {"description": "the schedule", **json(ref("ScheduleView"))}}
    page = [
        query("limit", "1..500", {"type": "integer", "minimum": 1, "maximum": 500}),
        query("cursor", "next_cursor of the previous page"),
    ]
    body = {"required": True, **json(ref("ScheduleSubmission"))}
    return {
        "/v1/schedules": {
            "post": op(
                "Create a cron or interval schedule; answers with its next five fire times",
                "tasks:write",
                {"201": {"description": "created", **json(ref("ScheduleView"))}},
                requestBody=body,
            ),
            "get": op(
                "List schedules, newest first",
                "tasks:read",
                {"200": {"description": "a page", **json(ref("ScheduleList"))}},
                parameters=[query("name", "exact schedule name"), *page],
            ),
        },
        "/v1/schedules/{id}": {
            "get": op(
                "A schedule with its next five fire times", "tasks:read", one, parameters=[sid]
            ),
            "patch": op(
                "Change a schedule (fields present replace; null clears)",
                "tasks:write",
                one,
                parameters=[sid],
                requestBody={"required": True, **json(ref("SchedulePatch"))},
            ),
            "delete": op(
                "Delete a schedule and its fire history (its tasks stay)",
                "tasks:write",
                {"204": {"description": "deleted"}},
                parameters=[sid],
            ),
        },
        "/v1/schedules/{id}/pause": {
            "post": op("Pause: no fires until resumed", "tasks:write", one, parameters=[sid])
        },
        "/v1/schedules/{id}/resume": {
            "post": op(
                "Resume: fires from the next instant after now (paused instants are not run)",
                "tasks:write",
                one,
                parameters=[sid],
            )
        },
        "/v1/schedules/{id}/trigger": {
            "post": op(
                "Run now: a fire at the current instant, whatever the overlap policy",
                "tasks:write",
                {"201": {"description": "the fire", **json(ref("FireView"))}},
                parameters=[sid],
            )
        },
        "/v1/schedules/{id}/backfill": {
            "post": op(
                "List the fire instants in [from, to]; unless dry_run, fire those not "
                "recorded yet (at most 1000 per request)",
                "tasks:write",
                {
                    "200": {"description": "dry run", **json(ref("BackfillResult"))},
                    "201": {"description": "fired", **json(ref("BackfillResult"))},
                },
                parameters=[sid],
                requestBody={"required": True, **json(ref("BackfillRequest"))},
            )
        },
        "/v1/schedules/{id}/fires": {
            "get": op(
                "Fire instants, newest first, with their outcome and task",
                "tasks:read",
                {"200": {"description": "a page", **json(ref("FireList"))}},
                parameters=[sid, *page],
            )
        },
    }
