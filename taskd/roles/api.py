"""The api role: the REST API, OpenAPI and the ops endpoints on one port."""

from __future__ import annotations

import asyncio
import logging

from taskd.api.app import create_app
from taskd.api.auth import Authenticator
from taskd.api.context import ApiContext
from taskd.api.submit import SubmitService
from taskd.roles.resources import Resources, serve

log = logging.getLogger("taskd.roles.api")


async def run(resources: Resources, stop: asyncio.Event) -> None:
    s = resources.settings
    auth = Authenticator(s.auth)
    context = ApiContext(
        settings=s,
        store=resources.store,
        queue=resources.queue,
        auth=auth,
        submit=SubmitService(resources.store, resources.queue, s),
    )
    runner = await serve(create_app(context), s.api.host, s.api.port)
    log.info("api listening on http://%s:%d", s.api.host, s.api.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await auth.close()
