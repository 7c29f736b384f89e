"""Every taskd command in the manifests and the compose file runs here, as its pod would.

Per stack: the migrate Job migrates a bare database; then every Deployment (compose service) starts
from the image's layout with its own arguments, environment, mounted config and Secret values
(only the database and Redis URLs, Kafka's and the SMTP relay's addresses point at this machine,
and each probe port is a free one),
answers its readiness and liveness probes, runs a demo task end to end, and exits 0 on SIGTERM
within its grace period.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
import pytest

from taskd.api.auth import mint_token
from tests.deploy.image import Image
from tests.deploy.run import Launcher, Running, roles, run_job, started
from tests.deploy.stacks import (
    ROOT,
    STAND_INS,
    Container,
    Doc,
    Probe,
    compose_containers,
    k8s_containers,
)
from tests.fault.harness import RedisServer, free_port

STACKS = ["base", "dev", "prod", "compose"]


def containers(stack: str, rendered: dict[str, list[Doc]]) -> list[Container]:
    if stack == "compose":
        return compose_containers()
    return k8s_containers(rendered[stack], STAND_INS)


async def applied_versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [r["version"] for r in rows]


async def demo_task_succeeds(api: Running, launcher: Launcher) -> None:
    """POST a demo.echo task to the api process and long-poll it to SUCCESS (a worker ran it)."""
    settings = launcher.settings(api.container)
    token = mint_token(
        api.container.env["TASKD_AUTH__JWT_SECRET"],
        "deploy-test",
        audience=settings.auth.audience or None,
        issuer=settings.auth.issuer or None,
    )
    base = f"http://127.0.0.1:{api.port}"
    headers = {"Authorization": f"Bearer {token}"}
    payload = {"hello": "kubernetes"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(
            f"{base}/v1/tasks", json={"type": "demo.echo", "payload": payload}
        ) as r:
            assert r.status == 201, await r.text()
            task_id = (await r.json())["id"]
        async with http.get(f"{base}/v1/tasks/{task_id}?wait=20") as r:
            body = await r.json()
    assert body["status"] == "SUCCESS", body
    assert body["result"] == payload


@pytest.mark.parametrize("stack", STACKS)
async def test_every_role_command_starts_and_serves(
    stack: str,
    rendered: dict[str, list[Doc]],
    image: Image,
    tmp_path: Path,
    empty_database: str,
    private_redis: RedisServer,
) -> None:
    found = containers(stack, rendered)
    jobs = [c for c in found if c.is_job]
    services = [c for c in found if not c.is_job]
    assert [c.args for c in jobs] == [["migrate"]], f"{stack}: one migrate job expected"
    assert sorted(r for c in services for r in roles(c.args)) == [
        "api",
        "notifier",
        "promoter",
        "worker",
    ]
    launcher = Launcher(image, tmp_path)
    local = {
        "TASKD_DATABASE__URL": empty_database,
        "TASKD_REDIS__URL": private_redis.url,
        # Nothing listens there: the roles must start and be ready without Kafka or SMTP.
        "TASKD_DLQ__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "TASKD_NOTIFY__SMTP__HOST": "127.0.0.1",
        "TASKD_NOTIFY__SMTP__PORT": str(free_port()),
    }

    code, output = await run_job(launcher, jobs[0], local)
    assert code == 0, output
    shipped = sorted(int(p.name[:4]) for p in (ROOT / "migrations").glob("[0-9]*.sql"))
    assert await applied_versions(empty_database) == shipped

    async with started(launcher, services, local) as running:
        for r in running:
            assert r.container.probes, f"{r.container.name} has no probe"
        (api,) = [r for r in running if "api" in roles(r.container.args)]
        await demo_task_succeeds(api, launcher)
        for r in running:
            assert await r.stop() == 0, r.tail()


async def test_the_image_default_command_runs_every_role(
    image: Image, tmp_path: Path, database: str, private_redis: RedisServer
) -> None:
    """``docker run IMAGE`` with just the connections set: CMD is `--role all`, config built in."""
    default = Container(
        name="image/default",
        args=image.cmd,
        env={
            "TASKD_AUTH__JWT_SECRET": STAND_INS["jwt-secret"],
            "TASKD_DATABASE__URL": database,
            "TASKD_REDIS__URL": private_redis.url,
            "TASKD_DLQ__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "TASKD_NOTIFY__SMTP__HOST": "127.0.0.1",
            "TASKD_NOTIFY__SMTP__PORT": str(free_port()),
        },
    )
    assert sorted(roles(default.args)) == ["api", "notifier", "promoter", "worker"]
    launcher = Launcher(image, tmp_path)
    port = launcher.settings(default).api.port  # the api role serves the probes
    default.probes = [Probe("probe", "/healthz", port), Probe("probe", "/readyz", port)]
    async with started(launcher, [default], {}) as (running,):
        assert await running.stop() == 0, running.tail()
