"""What the manifests and the compose file tell each taskd container to run, read from them.

A ``Container`` is one taskd process as an orchestrator would start it: the arguments after the
image's ENTRYPOINT, the environment it sets (Secret and ConfigMap references resolved), the files
it mounts, the probes it sends and how long it waits after SIGTERM.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskd.cli import ALL_ROLES
from tests.deploy.dockerfile import ROOT

OVERLAYS = {
    "base": ROOT / "k8s" / "base",
    "dev": ROOT / "k8s" / "overlays" / "dev",
    "prod": ROOT / "k8s" / "overlays" / "prod",
}
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
TASKD_ROLES = ALL_ROLES  # one Deployment (compose service) each
# The prod overlay leaves the Secret to be created out of band: these stand in for it.
STAND_INS = {
    "database-url": "postgresql://overridden/by-the-test",
    "redis-url": "redis://overridden/by-the-test",
    "jwt-secret": "stand-in-for-the-out-of-band-secret-0123456789",
    "smtp-password": "stand-in-smtp-password",
    "webhook-secret": "whsec_c3RhbmQtaW4td2ViaG9vay1zZWNyZXQ=",
}

Doc = dict[str, Any]


@dataclass
class Probe:
    kind: str  # readiness, liveness, healthcheck
    path: str
    port: int


@dataclass
class Container:
    name: str  # kind/name of the workload
    args: list[str]
    env: dict[str, str]
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # mount path → {file: text}
    empty_dirs: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    grace_seconds: float = 30.0

    @property
    def is_job(self) -> bool:
        return not self.args or not self.args[0].startswith("-")


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is needed to render k8s/ (kubectl kustomize); .ci/run checks for it"
    return path


def kustomize(directory: Path) -> list[Doc]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def is_taskd_image(image: str) -> bool:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "taskd"


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next(
        (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name),
        None,
    )


def pod_templates(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(workload, pod template) of every Deployment, StatefulSet and Job."""
    kinds = ("Deployment", "StatefulSet", "Job")
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in kinds]


def taskd_containers(docs: list[Doc]) -> list[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container running the taskd image."""
    return [
        (workload, template["spec"], c)
        for workload, template in pod_templates(docs)
        for c in template["spec"]["containers"]
        if is_taskd_image(c["image"])
    ]


def secret_value(docs: list[Doc], name: str, key: str, fallback: dict[str, str]) -> str:
    """A Secret's value; ``fallback`` stands in for a Secret created out of band (prod)."""
    secret = find(docs, "Secret", name)
    if secret is None:
        assert key in fallback, f"no Secret {name} rendered and no stand-in for key {key}"
        return fallback[key]
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def container_env(docs: list[Doc], c: Doc, secrets: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            cm = find(docs, "ConfigMap", ref["configMapRef"]["name"])
            assert cm is not None, ref
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
        else:
            raise AssertionError(f"envFrom {ref} is not resolved by these tests")
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secret_value(docs, ref["name"], ref["key"], secrets)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = find(docs, "ConfigMap", ref["name"])
            assert cm is not None, ref
            env[item["name"]] = str(cm["data"][ref["key"]])
        else:
            raise AssertionError(f"env {item['name']}: {source} is not resolved by these tests")
    return env


def mounted_files(
    docs: list[Doc], spec: Doc, c: Doc
) -> tuple[dict[str, dict[str, str]], list[str]]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, dict[str, str]] = {}
    empty: list[str] = []
    for mount in c.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            empty.append(mount["mountPath"])
        elif "configMap" in volume:
            cm = find(docs, "ConfigMap", volume["configMap"]["name"])
            assert cm is not None, f"ConfigMap {volume['configMap']['name']} is not rendered"
            data = cm.get("data", {})
            items = volume["configMap"].get("items")
            chosen = {i["path"]: data[i["key"]] for i in items} if items else dict(data)
            files[mount["mountPath"]] = chosen
        else:
            raise AssertionError(f"volume {mount['name']}: only configMap and emptyDir are known")
    return files, empty


def container_port(c: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {c['name']} has no port named {port}")


def k8s_probes(c: Doc) -> list[Probe]:
    probes = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = c.get(kind)
        if probe is None:
            continue
        assert "httpGet" in probe, f"{c['name']} {kind}: expected an httpGet probe"
        get = probe["httpGet"]
        probes.append(Probe(kind, get["path"], container_port(c, get["port"])))
    return probes


def k8s_containers(docs: list[Doc], secrets: dict[str, str]) -> list[Container]:
    out = []
    for workload, spec, c in taskd_containers(docs):
        assert "command" not in c, "the image's ENTRYPOINT is taskd: set args, not command"
        files, empty = mounted_files(docs, spec, c)
        out.append(
            Container(
                name=f"{workload['kind']}/{workload['metadata']['name']}",
                args=[str(a) for a in c.get("args", [])],
                env=container_env(docs, c, secrets),
                files=files,
                empty_dirs=empty,
                probes=k8s_probes(c),
                grace_seconds=float(spec.get("terminationGracePeriodSeconds", 30)),
            )
        )
    return out


def compose() -> Doc:
    return dict(yaml.safe_load(COMPOSE.read_text()))


_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[\w/.-]*)")


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    return total


def compose_containers() -> list[Container]:
    """The compose services built from this repository's Dockerfile."""
    out = []
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        probes = []
        test = service.get("healthcheck", {}).get("test")
        if test:
            match = _URL.search(" ".join(test))
            assert match, f"{name}: healthcheck without a probe URL: {test}"
            probes.append(Probe("healthcheck", match[2], int(match[1])))
        command = service.get("command", [])
        assert isinstance(command, list), f"{name}: use the exec form (a list) for command"
        out.append(
            Container(
                name=f"compose/{name}",
                args=[str(a) for a in command],
                env={k: str(v) for k, v in service.get("environment", {}).items()},
                probes=probes,
                grace_seconds=_duration(str(service.get("stop_grace_period", "10s"))),
            )
        )
    return out
