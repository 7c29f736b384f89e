"""The validators this project ships with (the `dev` extra), run offline on every artefact."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.stacks import COMPOSE, OVERLAYS, ROOT, WORKFLOW, Doc, find

# The oldest Kubernetes these manifests are meant for, and the newest the validator knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: pip install -e '.[dev]'"
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def schema_errors(doc: Doc, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        return [f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {where}: {e.message}"]
    return []


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_manifests_match_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    errors = [e for doc in rendered[overlay] for v in VERSIONS for e in schema_errors(doc, v)]
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_broken_manifest(rendered: dict[str, list[Doc]]) -> None:
    api = find(rendered["base"], "Deployment", "taskd-api")
    assert api is not None
    broken = copy.deepcopy(api)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    assert schema_errors(broken, VERSIONS[0])
    broken = copy.deepcopy(api)
    broken["spec"]["replicas"] = "two"
    assert schema_errors(broken, VERSIONS[0])


def test_workflow_passes_actionlint_with_shellcheck() -> None:
    out = run(tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"), str(WORKFLOW))
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_matches_the_github_workflow_schema() -> None:
    out = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_matches_the_compose_spec() -> None:
    out = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_passes_hadolint() -> None:
    out = run(tool("hadolint"), "--no-color", str(ROOT / "Dockerfile"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_linters_reject_what_they_should(tmp_path: Path) -> None:
    """Each validator fails on a known-bad input here, so a pass above means something."""
    workflow = tmp_path / ".github" / "workflows" / "bad.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo $UNQUOTED\n"
    )
    out = run(tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"), str(workflow))
    assert out.returncode != 0 and "SC2086" in out.stdout, out.stdout
    workflow.write_text("on: push\njobs:\n  a:\n    runs-on: 3\n    stepz: []\n")
    out = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)
    )
    assert out.returncode != 0, out.stdout
    compose = tmp_path / "compose.yml"
    compose.write_text(yaml.safe_dump({"services": {"a": {"image": "x", "ports": [{"bogus": 1}]}}}))
    out = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose))
    assert out.returncode != 0, out.stdout
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN cd /tmp && pip install flask\n")
    out = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert out.returncode != 0 and "DL3007" in out.stdout, out.stdout
