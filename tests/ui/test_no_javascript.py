"""The core flows with JavaScript disabled: plain forms and redirects; pages of live tasks
refresh themselves (a <noscript> refresh) instead of streaming."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import Browser, expect

from taskd import TaskContext
from tests.ui.conftest import Ui, new_tab, writer
from tests.ui.test_flows import Switch, eventually_status


async def blocked(ctx: TaskContext, payload: Any) -> None:
    await asyncio.Event().wait()


async def test_core_flows_pass_without_javascript(ui: Ui, browser: Browser) -> None:
    tab = await new_tab(browser, ui, javascript=False)
    page = tab.page
    ship = Switch()
    async with ui.worker(t__ship=ship, t__block=blocked):
        failed = await ui.submit("t.ship", payload={"order": 5}, max_retries=0)
        dead = [await ui.submit("t.ship", payload={"order": n}, max_retries=0) for n in (6, 7)]
        running = await ui.submit("t.block")
        for task_id in (failed, *dead):
            await eventually_status(ui, task_id, "FAILED")
        await tab.sign_in(writer())

        # retry a failed task; the page refreshes itself until the task is done
        await tab.open(f"/ui/tasks/{failed}")
        status = page.locator("#task-live .status .badge")
        await expect(status).to_have_text("FAILED")
        ship.works = True
        await page.locator("[data-action=retry]").click()
        await expect(status).to_have_text("SUCCESS")

        # cancel a running task
        await tab.open(f"/ui/tasks/{running}")
        await expect(status).to_have_text("RUNNING")
        await page.locator("[data-action=cancel]").click()
        await expect(status).to_have_text("CANCELLED")

        # redrive a dead-letter group: dry run, then run
        await tab.open("/ui/dlq")
        await page.locator("[data-action=dry-run]").click()
        await expect(page.get_by_test_id("dry-run")).to_contain_text("2 tasks would be redriven")
        await page.locator("[data-action=run]").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Redrove 2 tasks.")
        for task_id in dead:
            await eventually_status(ui, task_id, "SUCCESS")

        # bulk cancel from the Tasks page
        more = [await ui.submit("t.ship", delay=3600) for _ in range(2)]
        await tab.open("/ui/tasks?status=PENDING")
        for task_id in more:
            await page.locator(f"input[name=id][value='{task_id}']").check()
        await page.locator("[data-action=bulk-cancel]").click()
        await expect(page.get_by_test_id("notice")).to_contain_text("Cancelled 2 of 2")
        assert [await ui.status(t) for t in more] == ["CANCELLED"] * 2

        # look a task up by its idempotency key, then by its id
        keyed = await ui.submit("t.ship", delay=3600, idempotency_key="order-42")
        for query in ("order-42", keyed):
            await tab.open("/ui/tasks")
            await page.get_by_label("Look up a task by id or idempotency key").fill(query)
            await page.get_by_role("button", name="Find").click()
            await expect(page).to_have_url(f"{ui.base}/ui/tasks/{keyed}")
    tab.assert_no_csp_violation()
    await tab.context.close()


async def test_redrive_a_selection_of_dead_letters_without_javascript(
    ui: Ui, browser: Browser
) -> None:
    tab = await new_tab(browser, ui, javascript=False)
    page = tab.page
    ship = Switch()
    async with ui.worker(t__ship=ship):
        ids = [await ui.submit("t.ship", payload={"order": n}, max_retries=0) for n in (31, 32, 33)]
        for task_id in ids:
            await eventually_status(ui, task_id, "FAILED")
        await tab.sign_in(writer())
        await tab.open("/ui/dlq")
        for task_id in ids[:2]:
            await page.locator(f"input[name=id][value='{task_id}']").check()
        await page.locator("[data-action=dry-run-selected]").click()
        await expect(page.get_by_test_id("dry-run")).to_contain_text("2 tasks would be redriven")
        ship.works = True
        await page.locator("[data-action=run]").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Redrove 2 tasks.")
        for task_id in ids[:2]:
            await eventually_status(ui, task_id, "SUCCESS")
        assert await ui.status(ids[2]) == "FAILED"
    tab.assert_no_csp_violation()
    await tab.context.close()
