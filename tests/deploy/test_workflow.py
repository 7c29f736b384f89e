"""The CI workflow's shape, and its deploy step's kustomization rendered as the deploy job would."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.stacks import OVERLAYS, WORKFLOW, Doc, find, kustomize, taskd_containers

IMAGE = "ghcr.io/example/taskd"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def workflow() -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); nothing here needs it.
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name") == name)


def test_test_then_build_then_image_then_gated_deploy() -> None:
    jobs = workflow()["jobs"]
    assert jobs["build"]["needs"] == "test"
    assert jobs["image"]["needs"] == "build"
    assert jobs["deploy"]["needs"] == "image"
    services = jobs["test"]["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert any(s.get("run") == "make lint type test" for s in jobs["test"]["steps"])
    assert jobs["deploy"]["environment"] == "production"
    for condition in (jobs["deploy"]["if"], jobs["image"]["env"]["PUSH"]):
        assert "refs/heads/main" in condition and "refs/tags/" in condition
    for job in jobs.values():
        for s in job["steps"]:
            if "uses" in s:
                assert re.search(r"@v\d+$", s["uses"]), f"pin {s['uses']} to a major version"


def test_the_deploy_job_pins_every_taskd_container_to_the_pushed_digest(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    deploy = workflow()["jobs"]["deploy"]
    script = step(deploy, "Pin the image just pushed")["run"]
    match = re.search(r"<<YAML\n(.*?)\nYAML", script, re.DOTALL)
    assert match, "the step writes its kustomization with a <<YAML heredoc"
    text = string.Template(match[1]).substitute(IMAGE=IMAGE, DIGEST=DIGEST)
    prod = os.path.relpath(OVERLAYS["prod"], tmp_path)
    (tmp_path / "kustomization.yaml").write_text(text.replace("../prod", prod))
    docs = kustomize(tmp_path)
    assert len(docs) == len(rendered["prod"])
    images = {c["image"] for _, _, c in taskd_containers(docs)}
    assert images == {f"{IMAGE}@{DIGEST}"}
    apply = step(deploy, "Apply")["run"]
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert set(re.findall(r"kubectl -n (\S+)", apply)) == {namespace}
    for kind, name in re.findall(r"(job|deployment)/(\$d|[\w-]+)", apply):
        if name != "$d":
            assert find(docs, kind.capitalize(), name) is not None, name
    rollouts = re.search(r"for d in ([\w\s-]+); do", apply)
    assert rollouts is not None
    waited = set(rollouts[1].split())
    assert waited == {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
