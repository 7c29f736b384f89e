"""The API's error format (API.md, Errors) and the middleware that guarantees it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from taskd.errors import DependencyUnavailable

log = logging.getLogger("taskd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def problem(field: str, text: str) -> dict[str, str]:
    return {"field": field, "problem": text}


def validation_error(details: list[dict[str, Any]], message: str = "") -> ApiError:
    text = message or "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    return ApiError(422, "validation_failed", text or "the request is not valid", details)


def error_response(err: ApiError) -> web.Response:
    body = {"error": {"code": err.code, "message": err.message, "details": err.details}}
    return web.Response(
        status=err.status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=err.headers,
    )


def make_error_middleware(retry_after: int) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)
        except DependencyUnavailable as e:
            log.warning("answering 503: %s", e)
            return error_response(
                ApiError(503, "unavailable", str(e), headers={"Retry-After": str(retry_after)})
            )
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = _HTTP_CODES.get(e.status, "http_error")
            headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow",)}
            return error_response(ApiError(e.status, code, e.reason, headers=headers))
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(ApiError(500, "internal", "internal server error"))

    return errors
