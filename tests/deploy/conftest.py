"""Fixtures of the deployment tests: the rendered manifests, the image laid out, a bare database."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.conftest import ADMIN_URL, db_url
from tests.deploy.image import Image, build
from tests.deploy.stacks import OVERLAYS, Doc, kustomize
from tests.fault.harness import RedisServer


class Rendered(dict[str, list[Doc]]):
    """``kubectl kustomize`` of the base and of each overlay, each rendered when first asked for
    (so one that does not render fails only its own tests)."""

    def __missing__(self, name: str) -> list[Doc]:
        self[name] = kustomize(OVERLAYS[name])
        return self[name]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    return Rendered()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build(tmp_path_factory.mktemp("image"))


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A database with nothing in it, for the migrate Job to migrate; yields its URL."""
    name = f"taskd_deploy_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield db_url(name)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: the roles serve queue `default` as configured."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
