"""What the api role's handlers share, stored on the app under typed keys."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from taskd.api.auth import Authenticator, InvalidToken, Principal
from taskd.api.errors import ApiError
from taskd.api.submit import SubmitService
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    store: TaskStore
    queue: RedisQueue
    auth: Authenticator
    submit: SubmitService


CONTEXT = web.AppKey("taskd_context", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


async def require(request: web.Request, scope: str) -> Principal:
    """The caller, if its token is valid and carries ``scope``; else 401 or 403."""
    try:
        principal = await ctx(request).auth.authenticate(request.headers.get("Authorization"))
    except InvalidToken as e:
        raise ApiError(
            401,
            "unauthorized",
            str(e),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from e
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this token lacks the {scope} scope")
    return principal
