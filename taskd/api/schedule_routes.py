"""The /v1/schedules routes (issue 15): tenant-scoped, ``tasks:write`` to change."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import asyncpg
from aiohttp import web

from taskd.api.auth import Principal
from taskd.api.context import ctx, require
from taskd.api.decode import decode, read_json
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.representation import rfc3339
from taskd.api.routes import _decode_cursor, _encode_cursor, _number, json_response
from taskd.api.schedule_schemas import (
    BackfillRequest,
    FireList,
    FireView,
    ScheduleList,
    SchedulePatch,
    ScheduleSubmission,
)
from taskd.api.schedules import ScheduleService
from taskd.clock import Clock, SystemClock
from taskd.store.schedules import ScheduleStore

routes = web.RouteTableDef()
# The clock the schedule routes read "now" from (tests set a fake one on the app).
CLOCK = web.AppKey("taskd_schedule_clock", Clock)
_NAMES = "^[A-Za-z0-9_.:-]{1,128}$"


def service(request: web.Request) -> ScheduleService:
    c = ctx(request)
    clock = request.app.get(CLOCK) or SystemClock()
    return ScheduleService(ScheduleStore(c.store), c.submit, clock)


def _schedule_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as e:
        raise ApiError(404, "not_found", "no such schedule") from e


def _missing() -> ApiError:
    return ApiError(404, "not_found", "no such schedule")


def _taken(name: str) -> ApiError:
    return ApiError(
        409, "conflict", f"a schedule named {name!r} exists", [problem("name", "already in use")]
    )


@routes.post("/v1/schedules")
async def create_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    sub = decode(await read_json(request), ScheduleSubmission)
    s = service(request)
    d, place = s.new(sub, principal.tenant)
    row = await s.store.create(principal.tenant, d, place)
    if row is None:
        raise _taken(sub.name)
    return json_response(s.view(row, upcoming=True), 201)


@routes.get("/v1/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    name = request.query.get("name")
    if name is not None and not (0 < len(name) <= 128 and name.isprintable()):
        raise validation_error([problem("name", f"must match {_NAMES}")])
    limit = _number(request, "limit", 100.0, 1, 500)
    if not limit.is_integer():
        raise validation_error([problem("limit", "must be a whole number")])
    s = service(request)
    before = _decode_cursor(request.query.get("cursor"))
    rows = await s.store.page(principal.tenant_filter(), name, before, int(limit) + 1)
    more = len(rows) > limit
    rows = rows[: int(limit)]
    cursor = _encode_cursor(rows[-1]["id"]) if more and rows else None
    return json_response(ScheduleList([s.view(r) for r in rows], cursor))


@routes.get("/v1/schedules/{id}")
async def get_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    s = service(request)
    row = await s.store.get(_schedule_id(request), principal.tenant_filter())
    if row is None:
        raise _missing()
    return json_response(s.view(row, upcoming=True))


async def _change(request: web.Request, principal: Principal, patch: SchedulePatch) -> web.Response:
    schedule_id = _schedule_id(request)
    s = service(request)
    try:
        row = await s.store.modify(
            schedule_id, principal.tenant_filter(), lambda r: s.patched(r, patch)
        )
    except asyncpg.UniqueViolationError as e:
        raise _taken(str(patch.name)) from e
    if row is None:
        raise _missing()
    return json_response(s.view(row, upcoming=True))


@routes.patch("/v1/schedules/{id}")
async def patch_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    return await _change(request, principal, decode(await read_json(request), SchedulePatch))


@routes.post("/v1/schedules/{id}/pause")
async def pause_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    return await _change(request, principal, SchedulePatch(paused=True))


@routes.post("/v1/schedules/{id}/resume")
async def resume_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    return await _change(request, principal, SchedulePatch(paused=False))


@routes.delete("/v1/schedules/{id}")
async def delete_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    schedule_id = _schedule_id(request)
    s = service(request)
    row = await s.store.get(schedule_id, principal.tenant_filter())
    if row is None:
        raise _missing()
    if row["source"] == "config":
        raise ApiError(
            409,
            "conflict",
            "this schedule is declared in the configuration: remove it there",
            [problem("source", "config")],
        )
    if not await s.store.delete(schedule_id, principal.tenant_filter()):
        raise _missing()
    return web.Response(status=204)


@routes.post("/v1/schedules/{id}/trigger")
async def trigger_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    fire = await service(request).trigger(_schedule_id(request), principal.tenant_filter())
    if fire is None:
        raise _missing()
    return json_response(fire, 201)


@routes.post("/v1/schedules/{id}/backfill")
async def backfill_schedule(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    req = decode(await read_json(request), BackfillRequest)
    result = await service(request).backfill(_schedule_id(request), principal.tenant_filter(), req)
    if result is None:
        raise _missing()
    return json_response(result, 200 if req.dry_run else 201)


@routes.get("/v1/schedules/{id}/fires")
async def list_fires(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    schedule_id = _schedule_id(request)
    s = service(request)
    if await s.store.get(schedule_id, principal.tenant_filter()) is None:
        raise _missing()
    limit = _number(request, "limit", 100.0, 1, 500)
    if not limit.is_integer():
        raise validation_error([problem("limit", "must be a whole number")])
    before = _decode_instant(request.query.get("cursor"))
    rows = await s.store.fires(schedule_id, before, int(limit) + 1)
    more = len(rows) > limit
    rows = rows[: int(limit)]
    items = [
        FireView(
            instant=rfc3339(r["instant"]) or "",
            outcome=r["outcome"],
            task_id=str(r["task_id"]) if r["task_id"] else None,
            fired_at=rfc3339(r["fired_at"]) or "",
        )
        for r in rows
    ]
    cursor = _encode_instant(rows[-1]["instant"]) if more and rows else None
    return json_response(FireList(items, cursor))


def _encode_instant(instant: datetime) -> str:
    return base64.urlsafe_b64encode(instant.isoformat().encode()).decode().rstrip("=")


def _decode_instant(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        value = datetime.fromisoformat(text)
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise validation_error([problem("cursor", "not a cursor this API returned")]) from e
    if value.tzinfo is None:
        raise validation_error([problem("cursor", "not a cursor this API returned")])
    return value
