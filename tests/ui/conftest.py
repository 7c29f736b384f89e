"""Browser tests of the dashboard: Debian's Chromium driven by async Playwright against a real
api app (real Postgres and Redis, a real listening port) and a real in-process worker.

Chromium must be installed (``.ci/run`` installs the Debian package): a missing browser fails
these tests, it never skips them. Waits are Playwright locator assertions only (the CSP blocks
Playwright's eval-based waits, and sleeps are not synchronisation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.queue.presence import WorkerPresence
from taskd.registry import Handler
from taskd.services.presence import PresenceAnnouncer
from taskd.store.tasks import TaskStore
from tests.conftest import bearer, token
from tests.helpers import registry_of, running_worker

# Debian's chromium (.ci/run installs it); GitHub's runners point this at their Chrome.
CHROMIUM = Path(os.environ.get("TASKD_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
expect.set_options(timeout=15_000)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Live pages poll fast in tests, so that what they wait for shows up quickly."""
    ui = msgspec.structs.replace(settings.ui, live_interval_seconds=0.2)
    return msgspec.structs.replace(settings, ui=ui)


@dataclass
class Ui:
    client: TestClient[Any, Any]
    settings: Settings
    store: TaskStore
    queue: RedisQueue
    queue_name: str

    @property
    def base(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def submit(self, type_: str, *, tenant: str = "alice", **fields: Any) -> str:
        resp = await self.client.post(
            "/v1/tasks",
            headers=bearer(tenant),
            json={"type": type_, "queue": self.queue_name, **fields},
        )
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])

    async def dag(self, name: str, tasks: list[dict[str, Any]], tenant: str = "alice") -> str:
        items = [{"queue": self.queue_name, **t} for t in tasks]
        resp = await self.client.post(
            "/v1/dags", headers=bearer(tenant), json={"name": name, "tasks": items}
        )
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])

    async def status(self, task_id: str) -> str:
        row = await self.store.get(uuid.UUID(task_id), None)
        assert row is not None
        return str(row["status"])

    @contextlib.asynccontextmanager
    async def worker(self, **handlers: Handler) -> AsyncIterator[None]:
        """A real worker serving the test queue, announcing itself like the worker role."""
        async with running_worker(
            self.settings, self.store, self.queue, registry_of(**handlers)
        ) as w:
            announcer = PresenceAnnouncer(w, WorkerPresence(self.queue.client), interval=0.5)
            task = asyncio.create_task(announcer.run())
            try:
                await announcer.run_once()
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def ui(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> Ui:
    return Ui(api, settings, store, queue, queue_name)


@dataclass
class Tab:
    """A page plus everything the browser console said about the CSP."""

    page: Page
    context: BrowserContext
    base: str
    violations: list[str] = field(default_factory=list)
    navigations: int = 0

    async def open(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def sign_in(self, jwt: str) -> None:
        await self.open("/ui/login")
        await self.page.get_by_label("Token").fill(jwt)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_test_id("who")).to_be_visible()

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_csp_violation(self) -> None:
        assert not self.violations, self.violations


_CSP = re.compile(r"content security policy|refused to (execute|load|apply)", re.I)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does), the UI tests "
            "need a real browser"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_tab(browser: Browser, ui: Ui, *, javascript: bool = True) -> Tab:
    context = await browser.new_context(java_script_enabled=javascript)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    tab = Tab(page, context, ui.base)

    def console(message: ConsoleMessage) -> None:
        if _CSP.search(message.text):
            tab.violations.append(message.text)

    def navigated(frame: Any) -> None:
        if frame == page.main_frame:
            tab.navigations += 1

    page.on("console", console)
    page.on("pageerror", lambda error: tab.violations.append(f"page error: {error}"))
    page.on("framenavigated", navigated)
    return tab


@pytest.fixture
async def tab(browser: Browser, ui: Ui) -> AsyncIterator[Tab]:
    t = await new_tab(browser, ui)
    yield t
    await t.context.close()


def writer(tenant: str = "alice") -> str:
    return token(tenant)


def reader(tenant: str = "alice") -> str:
    return token(tenant, scopes=("tasks:read",))
