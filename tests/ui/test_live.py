"""Live pages pause while the tab is hidden and resume when it is shown again.

Headless Chromium never hides a tab, so the test makes the page believe it is hidden: it
overrides ``document.hidden`` and sends ``visibilitychange`` (what the browser itself does).
"""

from __future__ import annotations

from playwright.async_api import Browser, expect

from taskd.ui.live import LiveHub
from taskd.ui.state import UI
from tests.conftest import bearer
from tests.helpers import eventually
from tests.ui.conftest import Ui, new_tab, writer

HIDE = """hidden => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def hub_of(ui: Ui) -> LiveHub:
    app = ui.client.server.app
    sub = next(r._app for r in app.router.resources() if hasattr(r, "_app"))  # the /ui app
    hub: LiveHub = sub[UI].hub
    return hub


async def test_a_hidden_tab_closes_its_stream_and_catches_up_when_shown(
    ui: Ui, browser: Browser
) -> None:
    hub = hub_of(ui)
    task_id = await ui.submit("t.later", delay=3600)
    tab = await new_tab(browser, ui)
    await tab.sign_in(writer())
    await tab.open(f"/ui/tasks/{task_id}")
    status = tab.page.locator("#task-live .status .badge")
    await expect(status).to_have_text("PENDING")

    async def streams() -> int:
        return len(hub.streams)

    await eventually(streams)
    await tab.page.evaluate(HIDE, True)
    await eventually(lambda: _none(hub))
    resp = await ui.client.post(f"/v1/tasks/{task_id}/cancel", headers=bearer())
    assert resp.status == 200
    await tab.page.evaluate(HIDE, False)
    await expect(status).to_have_text("CANCELLED")
    assert len(hub.streams) == 1
    tab.assert_no_csp_violation()
    await tab.context.close()


async def _none(hub: LiveHub) -> bool:
    return not hub.streams
