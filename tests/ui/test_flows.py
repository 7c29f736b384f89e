"""The dashboard's core flows in a real browser, with JavaScript (live pages) and without."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from playwright.async_api import expect

from taskd import TaskContext
from tests.ui.conftest import Tab, Ui, writer


class Switch:
    """A handler that fails until switched on."""

    def __init__(self) -> None:
        self.works = False

    async def __call__(self, ctx: TaskContext, payload: Any) -> dict[str, Any]:
        if not self.works:
            raise RuntimeError(f"order {payload.get('order', 0)} could not be shipped")
        return {"shipped": payload.get("order", 0)}


async def blocked(ctx: TaskContext, payload: Any) -> None:
    await asyncio.Event().wait()  # runs until cancelled


async def test_sign_in_find_a_failed_task_read_its_attempts_retry_and_watch_it_succeed(
    ui: Ui, tab: Tab
) -> None:
    ship = Switch()
    async with ui.worker(t__ship=ship):
        failed = await ui.submit("t.ship", payload={"order": 7}, max_retries=1)
        await ui.submit("t.ship", payload={"order": 8}, delay=3600)
        await tab.sign_in(writer())
        page = tab.page
        queue_row = page.locator(f"tr[data-queue='{ui.queue_name}']")
        await expect(queue_row.locator("td.spark")).to_contain_text("0 / 2")  # last hour
        await expect(queue_row.locator("td.num").nth(1)).to_have_text("1")  # delayed
        await expect(page.get_by_test_id("banner-dlq")).to_be_visible()
        # presence is global to the Redis: other suites' workers may be live too
        await expect(page.get_by_test_id("workers-live")).to_have_text(re.compile(r"^[1-9]"))
        await tab.shot("overview")
        await page.get_by_role("link", name="Tasks", exact=True).click()
        await page.get_by_label("status").select_option("FAILED")
        await page.get_by_role("button", name="Filter").click()
        rows = page.get_by_test_id("tasks").locator("tbody tr[data-task]")
        await expect(rows).to_have_count(1)
        await rows.first.get_by_role("link").click()
        attempts = page.get_by_test_id("attempts").locator("tbody tr[data-attempt]")
        await expect(attempts).to_have_count(2)
        await expect(attempts.nth(0)).to_contain_text("ERROR")
        await expect(attempts.nth(1)).to_contain_text("order 7 could not be shipped")
        await expect(page.locator("#task-live .status .badge")).to_have_text("FAILED")
        await tab.shot("task")
        ship.works = True
        before = tab.navigations
        await page.locator("[data-action=retry]").click()
        await expect(page.locator("#task-live .status .badge")).to_have_text("SUCCESS")
        await expect(attempts).to_have_count(3)
        assert tab.navigations == before, "the page reloaded"
        assert await ui.status(failed) == "SUCCESS"
    tab.assert_no_csp_violation()


async def test_cancel_a_running_task(ui: Ui, tab: Tab) -> None:
    async with ui.worker(t__block=blocked):
        task_id = await ui.submit("t.block")
        await tab.sign_in(writer())
        await tab.open(f"/ui/tasks/{task_id}")
        page = tab.page
        await expect(page.locator("#task-live .status .badge")).to_have_text("RUNNING")
        await expect(page.locator("[data-reason=leased]")).to_contain_text("leased by worker")
        await page.locator("[data-action=cancel]").click()
        await expect(page.locator("#task-live .status .badge")).to_have_text("CANCELLED")
        assert await ui.status(task_id) == "CANCELLED"
        await page.reload()
        await expect(page.get_by_test_id("audit")).to_contain_text("alice cancel via ui")
    tab.assert_no_csp_violation()


async def test_open_a_dag_and_see_a_node_change_colour(ui: Ui, tab: Tab) -> None:
    gate = asyncio.Event()

    async def slow(ctx: TaskContext, payload: Any) -> None:
        await gate.wait()

    async def quick(ctx: TaskContext, payload: Any) -> None:
        return None

    async with ui.worker(t__slow=slow, t__quick=quick):
        dag_id = await ui.dag(
            "nightly",
            [
                {"key": "extract", "type": "t.slow"},
                {"key": "load", "type": "t.quick", "depends_on": ["extract"]},
            ],
        )
        await tab.sign_in(writer())
        await tab.open(f"/ui/dags/{dag_id}")
        graph = tab.page.get_by_test_id("dag")
        extract = graph.locator("g.node[data-key=extract]")
        load = graph.locator("g.node[data-key=load]")
        await expect(extract).to_have_attribute("data-status", "RUNNING")
        await expect(extract).to_have_class("node st-RUNNING")
        await expect(load).to_have_attribute("data-status", "WAITING")
        await tab.shot("dag")
        before = tab.navigations
        gate.set()
        await expect(extract).to_have_class("node st-SUCCESS")
        await expect(load).to_have_class("node st-SUCCESS")
        assert tab.navigations == before, "the page reloaded"
    tab.assert_no_csp_violation()


async def test_redrive_a_dead_letter_group_dry_run_then_run(ui: Ui, tab: Tab) -> None:
    ship = Switch()
    async with ui.worker(t__ship=ship):
        ids = [await ui.submit("t.ship", payload={"order": n}, max_retries=0) for n in (11, 12, 13)]
        for task_id in ids:
            await eventually_status(ui, task_id, "FAILED")
        await tab.sign_in(writer())
        page = tab.page
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        groups = page.get_by_test_id("dlq-groups").locator("tbody tr[data-group]")
        await expect(groups).to_have_count(1)
        await expect(groups.first).to_contain_text("order <n> could not be shipped")
        await expect(groups.first.locator("td.num")).to_have_text("3")
        await groups.first.locator("[data-action=dry-run]").click()
        await expect(page.get_by_test_id("dry-run")).to_contain_text("3 tasks would be redriven")
        assert [await ui.status(i) for i in ids] == ["FAILED"] * 3  # a dry run changes nothing
        ship.works = True
        await page.locator("[data-action=run]").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Redrove 3 tasks.")
        for task_id in ids:
            await eventually_status(ui, task_id, "SUCCESS")
        await expect(groups).to_have_count(0)  # after a reload by the redirect
        entries = await ui.store.pool.fetch("SELECT actor, via, action, count FROM audit_log")
        assert [tuple(e) for e in entries] == [("alice", "ui", "redrive", 3)]
    tab.assert_no_csp_violation()


async def test_redrive_a_selection_of_dead_letters_dry_run_then_run(ui: Ui, tab: Tab) -> None:
    ship = Switch()
    async with ui.worker(t__ship=ship):
        ids = [await ui.submit("t.ship", payload={"order": n}, max_retries=0) for n in (21, 22, 23)]
        for task_id in ids:
            await eventually_status(ui, task_id, "FAILED")
        chosen, left = ids[:2], ids[2]
        await tab.sign_in(writer())
        page = tab.page
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        rows = page.get_by_test_id("dlq-list").locator("tbody tr[data-task]")
        await expect(rows).to_have_count(3)
        for task_id in chosen:
            await page.get_by_label(f"select {task_id}", exact=True).check()
        await page.locator("[data-action=dry-run-selected]").click()
        await expect(page.get_by_test_id("dry-run")).to_contain_text("2 tasks would be redriven")
        assert [await ui.status(i) for i in ids] == ["FAILED"] * 3  # a dry run changes nothing
        ship.works = True
        await page.locator("[data-action=run]").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Redrove 2 tasks.")
        for task_id in chosen:
            await eventually_status(ui, task_id, "SUCCESS")
        assert await ui.status(left) == "FAILED"
        await expect(rows).to_have_count(1)  # after a reload by the redirect
        await expect(rows.first).to_have_attribute("data-task", left)
        entries = await ui.store.pool.fetch("SELECT actor, via, action, count FROM audit_log")
        assert [tuple(e) for e in entries] == [("alice", "ui", "redrive", 2)]
    tab.assert_no_csp_violation()


async def eventually_status(ui: Ui, task_id: str, status: str) -> None:
    from tests.helpers import eventually

    async def check() -> bool:
        return await ui.status(task_id) == status

    await eventually(check, timeout=15)
