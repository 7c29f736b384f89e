"""``taskd schedules list|show|trigger`` against a running API."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from taskd import schedules_cli
from taskd.config.settings import Settings
from tests.conftest import bearer, token


async def cli(api: TestClient[Any, Any], settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    schedules_cli.setup(parser)
    base = str(api.make_url("")).rstrip("/")
    action, *rest = argv
    args = parser.parse_args([action, "--api", base, "--token", token(), *rest])
    return await schedules_cli.main(settings, args)


async def test_list_show_and_trigger_by_name(
    api: TestClient[Any, Any],
    settings: Settings,
    queue_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resp = await api.post(
        "/v1/schedules",
        headers=bearer(),
        json={"name": "nightly", "cron": "0 2 * * *", "task": {"type": "t", "queue": queue_name}},
    )
    schedule = await resp.json()
    assert await cli(api, settings, "list") == 0
    out = capsys.readouterr().out
    assert "nightly" in out and "cron 0 2 * * * (UTC)" in out and "active/api" in out
    assert await cli(api, settings, "trigger", "nightly") == 0
    assert capsys.readouterr().out.startswith("triggered: task ")
    assert await cli(api, settings, "show", "nightly", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schedule"]["id"] == schedule["id"]
    assert [f["outcome"] for f in shown["fires"]] == ["triggered"]
    assert await cli(api, settings, "show", schedule["id"]) == 0
    assert "triggered" in capsys.readouterr().out
    assert await cli(api, settings, "show", "nope") == 1
    assert "no schedule named 'nope'" in capsys.readouterr().err
