"""The dashboard's security model in a real browser: scopes, tenants, CSRF and Origin, the CSP
on every route, and one-time sign-in links."""

from __future__ import annotations

import json
import secrets
from typing import Any

from playwright.async_api import APIResponse, Browser, expect

from taskd import TaskContext
from taskd.queue.sessions import SessionStore
from taskd.ui.security import CSP
from tests.conftest import token
from tests.ui.conftest import Tab, Ui, new_tab, reader, writer
from tests.ui.test_flows import Switch, eventually_status


async def csrf_of(tab: Tab) -> str:
    headers = await tab.page.locator("body").get_attribute("hx-headers")
    assert headers is not None
    return str(json.loads(headers)["X-CSRF-Token"])


async def post(tab: Tab, path: str, form: dict[str, str], origin: str | None = "") -> APIResponse:
    headers = {} if origin is None else {"Origin": origin or tab.base}
    return await tab.page.request.post(tab.base + path, form=form, headers=headers, max_redirects=0)


async def failed_task(ui: Ui, tenant: str = "alice") -> str:
    async with ui.worker(t__ship=Switch()):
        task_id = await ui.submit("t.ship", tenant=tenant, payload={"order": 1}, max_retries=0)
        await eventually_status(ui, task_id, "FAILED")
    return task_id


async def test_a_read_only_token_sees_no_action_button_and_its_posts_get_403(
    ui: Ui, tab: Tab
) -> None:
    task_id = await failed_task(ui)
    await tab.sign_in(reader())
    await expect(tab.page.get_by_test_id("who")).to_contain_text("read-only")
    for path in (f"/ui/tasks/{task_id}", "/ui/tasks?status=FAILED", "/ui/dlq"):
        await tab.open(path)
        await expect(tab.page.locator("main")).to_contain_text("FAILED")
        await expect(tab.page.locator("[data-action]")).to_have_count(0)
    token = await csrf_of(tab)
    attempts = [
        (f"/ui/tasks/{task_id}/retry", {"csrf": token}),
        (f"/ui/tasks/{task_id}/cancel", {"csrf": token}),
        ("/ui/tasks/bulk", {"csrf": token, "action": "retry", "id": task_id}),
        ("/ui/dlq/redrive", {"csrf": token, "type": "t.ship", "mode": "run"}),
        ("/ui/dlq/redrive", {"csrf": token, "id": task_id, "mode": "run"}),
    ]
    for path, form in attempts:
        resp = await post(tab, path, form)
        assert resp.status == 403, (path, resp.status)
        assert "may look but not act" in await resp.text()
    assert await ui.status(task_id) == "FAILED"
    tab.assert_no_csp_violation()


async def test_another_tenants_task_is_a_404(ui: Ui, tab: Tab, browser: Browser) -> None:
    theirs = await failed_task(ui, tenant="bob")
    await tab.sign_in(writer("alice"))
    for path in (f"/ui/tasks/{theirs}", f"/ui/tasks/{theirs}/payload.json"):
        resp = await tab.page.request.get(tab.base + path)
        assert resp.status == 404, path
    await tab.open(f"/ui/tasks/{theirs}")
    await expect(tab.page.get_by_test_id("error")).to_have_text("No such task.")
    events = await tab.page.request.get(f"{tab.base}/ui/events?topic=task:{theirs}")
    assert events.status == 404
    resp = await post(tab, f"/ui/tasks/{theirs}/retry", {"csrf": await csrf_of(tab)})
    assert resp.status == 404
    # a selection of dead letters holding another tenant's task redrives nothing
    selection = {"csrf": await csrf_of(tab), "id": theirs}
    dry = await post(tab, "/ui/dlq/redrive", {**selection, "mode": "dry"})
    assert "0 tasks would be redriven" in await dry.text()
    run = await post(tab, "/ui/dlq/redrive", {**selection, "mode": "run"})
    assert run.headers["location"] == "/ui/dlq?redrove=0"
    assert await ui.status(theirs) == "FAILED"
    await tab.open("/ui/tasks")
    await expect(tab.page.get_by_test_id("count")).to_have_text("0 tasks")
    # an admin sees every tenant
    admin = await new_tab(browser, ui)
    await admin.sign_in(token("root", scopes=("admin",)))
    await admin.open(f"/ui/tasks/{theirs}")
    await expect(admin.page.locator("#task-live .status .badge")).to_have_text("FAILED")
    await admin.open("/ui/")
    await expect(admin.page.get_by_test_id("queues")).to_contain_text(ui.queue_name)
    admin.assert_no_csp_violation()
    await admin.context.close()


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    ui: Ui, tab: Tab
) -> None:
    task_id = await failed_task(ui)
    await tab.sign_in(writer())
    token = await csrf_of(tab)
    refused = [
        ({}, ""),  # no CSRF token
        ({"csrf": "forged"}, ""),  # a wrong one
        ({"csrf": token}, "http://evil.example"),  # the right token, another origin
        ({"csrf": token}, None),  # no Origin and no Referer
    ]
    for form, origin in refused:
        resp = await post(tab, f"/ui/tasks/{task_id}/retry", form, origin)
        assert resp.status == 403, (form, origin)
    assert await ui.status(task_id) == "FAILED"
    ok = await post(tab, f"/ui/tasks/{task_id}/retry", {"csrf": token})
    assert ok.status == 303
    assert await ui.status(task_id) != "FAILED"


async def test_every_route_carries_the_csp_and_the_console_reports_no_violation(
    ui: Ui, tab: Tab
) -> None:
    async def quick(ctx: TaskContext, payload: Any) -> dict[str, int]:
        return {"n": 1}

    async with ui.worker(t__quick=quick, t__ship=Switch()):
        failed = await ui.submit("t.ship", payload={"order": 1}, max_retries=0)
        dag_id = await ui.dag("d", [{"key": "a", "type": "t.quick"}])
        await eventually_status(ui, failed, "FAILED")
        login = await tab.page.request.get(tab.base + "/ui/login")
        assert login.headers["content-security-policy"] == CSP
        await tab.sign_in(writer())
        token = await csrf_of(tab)
        worker_id = (await ui.queue.client.zrange("taskd:{workers}:live", 0, 0))[0]
        pages = {
            "/ui/": "/ui/",
            "/ui/tasks": "/ui/tasks?status=FAILED",
            "/ui/tasks/{id}": f"/ui/tasks/{failed}",
            "/ui/dags/{id}": f"/ui/dags/{dag_id}",
            "/ui/dlq": "/ui/dlq",
            "/ui/workers": f"/ui/workers?worker={worker_id}",
            "/ui/login": "/ui/login",
        }
        seen = set()
        for route, path in pages.items():
            resp = await tab.page.goto(tab.base + path)
            assert resp is not None and resp.status == 200, path
            assert (await resp.all_headers())["content-security-policy"] == CSP, path
            seen.add(route)
            await tab.shot("page" + route.replace("/", "-").replace("{", "").replace("}", ""))
        ours = tab.page.get_by_test_id("workers").locator("tr", has_text=ui.queue_name)
        await tab.open("/ui/workers")
        await expect(ours).to_have_count(1)
        await expect(ours).to_contain_text("t.quick")
        others = {
            "/ui": await tab.page.request.get(tab.base + "/ui", max_redirects=0),
            "/ui/static": await tab.page.request.get(tab.base + "/ui/static/app.css"),
            "/ui/tasks/{id}/{part}.json": await tab.page.request.get(
                f"{tab.base}/ui/tasks/{failed}/result.json"
            ),
            "/ui/nope": await tab.page.request.get(tab.base + "/ui/nope"),
            "/ui/events": await tab.page.request.get(tab.base + "/ui/events?topic=nothing"),
            "/ui/tasks/bulk": await post(tab, "/ui/tasks/bulk", {"csrf": token, "action": "x"}),
            "/ui/tasks/{id}/{action}": await post(tab, f"/ui/tasks/{failed}/cancel", {}),
            "/ui/dags/{id}/retry": await post(tab, f"/ui/dags/{dag_id}/retry", {"csrf": token}),
            "/ui/dlq/redrive": await post(
                tab,
                "/ui/dlq/redrive",
                {
                    "csrf": token,
                    "type": "t.ship",
                    "error_type": "RuntimeError",
                    "pattern": "order <n> could not be shipped",
                },
            ),
            "/ui/logout": await post(tab, "/ui/logout", {}),
        }
        for route, resp in others.items():
            assert resp.headers["content-security-policy"] == CSP, route
            seen.add(route)
        assert "3 tasks" not in await others["/ui/dlq/redrive"].text()
        seen.add("/ui/static/{filename}")
        served = {
            r.resource.canonical
            for r in ui.client.server.app.router.routes()
            if r.resource is not None and r.resource.canonical.startswith("/ui")
        }
        assert served <= seen | {"/ui/static", "/ui/events", "/ui/login"}, served - seen
    tab.assert_no_csp_violation()


async def test_a_sign_in_link_works_once(ui: Ui, browser: Browser) -> None:
    ticket = secrets.token_urlsafe(24)
    await SessionStore(ui.queue.client).put_ticket(ticket, writer("carol"), 60_000)
    first = await new_tab(browser, ui)
    await first.open(f"/ui/login?ticket={ticket}")
    await first.page.get_by_role("button", name="Sign in with this link").click()
    await expect(first.page.get_by_test_id("who")).to_contain_text("carol")
    again = await new_tab(browser, ui)
    await again.open(f"/ui/login?ticket={ticket}")
    await again.page.get_by_role("button", name="Sign in with this link").click()
    await expect(again.page.get_by_test_id("error")).to_contain_text("used already")
    # The session cookie: HttpOnly, SameSite=Strict, scoped to /ui.
    (cookie,) = await first.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    first.assert_no_csp_violation()
    await first.context.close()
    await again.context.close()


async def test_the_violation_detector_detects(ui: Ui, tab: Tab) -> None:
    """Guards the test above: an inline script and style under our CSP are reported."""

    async def fake(route: Any) -> None:
        await route.fulfill(
            status=200,
            headers={"Content-Type": "text/html", "Content-Security-Policy": CSP},
            body="<p style='color:red'>x</p><script>document.title='ran'</script>",
        )

    await tab.page.route(tab.base + "/ui/fake", fake)
    await tab.open("/ui/fake")
    await expect(tab.page.locator("p")).to_have_text("x")
    assert len(tab.violations) >= 2, tab.violations
