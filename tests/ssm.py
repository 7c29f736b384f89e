"""AWS SSM Parameter Store for tests: moto in server mode (ThreadedMotoServer) on a free port,
reached over HTTP by aioboto3 exactly as a real endpoint would be."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

# moto accepts any credentials; the files point nowhere so a developer's ~/.aws never leaks in.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/taskd-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/taskd-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoSsm:
    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client: Any = boto3.client(
            "ssm",
            endpoint_url=self.endpoint,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def put(self, name: str, value: str, kind: str = "String") -> None:
        self.client.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)

    def stop(self) -> None:
        self.client.close()
        self.server.stop()
        # stop() ends serve_forever but leaves the listening socket to the garbage collector.
        if self.server._server is not None:
            self.server._server.server_close()


# Fixtures under their own function names: a test module imports the functions, and its test
# parameters (moto_ssm, aws_env, ssm_prefix) do not shadow the imports.
@pytest.fixture(scope="session", name="moto_ssm")
def moto_ssm_fixture() -> Iterator[MotoSsm]:
    server = MotoSsm()
    yield server
    server.stop()


@pytest.fixture(name="aws_env")
def aws_env_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(AWS_ENV)


@pytest.fixture(name="ssm_prefix")
def ssm_prefix_fixture() -> str:
    """A parameter path of this test's own (the moto server is shared by the session)."""
    return f"/taskd/test-{uuid.uuid4().hex[:10]}"
