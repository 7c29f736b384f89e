from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import bearer


async def test_submit_and_get(api: TestClient[Any, Any], queue_name: str) -> None:
    resp = await api.post(
        "/v1/tasks",
        json={"type": "demo.echo", "queue": queue_name, "payload": {"a": 1}},
        headers=bearer(),
    )
    assert resp.status == 201, await resp.text()
    task = await resp.json()
    assert task["status"] == "PENDING"
    resp = await api.get(f"/v1/tasks/{task['id']}", headers=bearer())
    assert resp.status == 200
    got = await resp.json()
    assert got["attempt_history"] == []
