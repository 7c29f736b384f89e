"""What the schemas cannot see: the manifests agree with taskd's CLI, settings and ports, and with
each other (selectors, budgets, autoscaler), and every taskd pod runs locked down."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.dockerfile import parse
from tests.deploy.image import Image
from tests.deploy.run import Launcher, parse_args, roles
from tests.deploy.stacks import (
    OVERLAYS,
    ROOT,
    STAND_INS,
    TASKD_ROLES,
    Doc,
    compose,
    compose_containers,
    container_port,
    find,
    k8s_containers,
    taskd_containers,
)

K8S = list(OVERLAYS)


def deployments(docs: list[Doc]) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("taskd")
    ]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", K8S)
def test_one_deployment_per_role_and_one_migrate_job(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    by_role: dict[str, list[str]] = {}
    for workload, _, c in taskd_containers(docs):
        args = [str(a) for a in c.get("args", [])]
        parse_args(args)  # SystemExit (a failure) if taskd's CLI rejects them
        if workload["kind"] == "Job":
            assert args == ["migrate"]
            assert workload["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
            continue
        assert workload["kind"] == "Deployment"
        assert "command" not in c, "keep the image's ENTRYPOINT (taskd): set args only"
        for role in roles(args):
            by_role.setdefault(role, []).append(workload["metadata"]["name"])
    assert by_role == {role: [f"taskd-{role}"] for role in TASKD_ROLES}
    assert find(docs, "Job", "taskd-migrate") is not None


@pytest.mark.parametrize("overlay", K8S)
def test_probes_and_scrape_annotations_use_the_configured_ports(
    rendered: dict[str, list[Doc]], overlay: str, image: Image, tmp_path: Path
) -> None:
    launcher = Launcher(image, tmp_path)
    docs = rendered[overlay]
    for container in k8s_containers(docs, STAND_INS):
        if container.is_job:
            continue
        settings = launcher.settings(container)
        assert settings.api.host == settings.ops.host == "0.0.0.0", "a pod must listen on its IP"
        api = "api" in roles(container.args)
        port = settings.api.port if api else settings.ops.port
        kinds = {p.kind: p for p in container.probes}
        assert kinds["readinessProbe"].path == "/readyz"
        assert kinds["livenessProbe"].path == "/healthz"
        assert {p.port for p in container.probes} == {port}, container.name
        workload = find(docs, "Deployment", container.name.split("/", 1)[1])
        assert workload is not None
        notes = workload["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == port


@pytest.mark.parametrize("overlay", K8S)
def test_taskd_pods_run_locked_down(rendered: dict[str, list[Doc]], overlay: str) -> None:
    (uid, _, gid) = parse()[-1].last("USER").partition(":")
    for workload, spec, c in taskd_containers(rendered[overlay]):
        where = f"{workload['metadata']['name']}/{c['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert str(pod["runAsUser"]) == uid and str(pod["runAsGroup"]) == gid, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], where


@pytest.mark.parametrize("overlay", K8S)
def test_service_budgets_and_autoscaler_match_the_pods(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    service = find(docs, "Service", "taskd-api")
    api = find(docs, "Deployment", "taskd-api")
    assert service is not None and api is not None
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in deployments(docs)
    }
    assert [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)] == [
        "taskd-api"
    ]
    (port,) = service["spec"]["ports"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container_port(container, port["targetPort"]) == container["ports"][0]["containerPort"]
    for d in deployments(docs):
        assert selects(d["spec"]["selector"]["matchLabels"], pods[d["metadata"]["name"]])
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for name, labels in pods.items():
        covering = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "taskd-worker")
    worker = find(docs, "Deployment", "taskd-worker")
    assert worker is not None and "replicas" not in worker["spec"], "the HPA owns the count"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", K8S)
def test_workers_get_longer_than_their_drain_grace(
    rendered: dict[str, list[Doc]], overlay: str, image: Image, tmp_path: Path
) -> None:
    launcher = Launcher(image, tmp_path)
    workers = [
        c
        for c in k8s_containers(rendered[overlay], STAND_INS)
        if not c.is_job and "worker" in roles(c.args)
    ]
    assert workers
    for c in workers:
        assert c.grace_seconds > launcher.settings(c).worker.shutdown_grace_seconds


def test_secrets_are_placeholders_in_base_patched_in_dev_and_absent_in_prod(
    rendered: dict[str, list[Doc]],
) -> None:
    base = find(rendered["base"], "Secret", "taskd-secrets")
    assert base is not None
    assert all("PLACEHOLDER" in v for k, v in base["stringData"].items() if k != "redis-url")
    dev = find(rendered["dev"], "Secret", "taskd-secrets")
    assert dev is not None and not any("PLACEHOLDER" in v for v in dev["stringData"].values())
    assert find(rendered["prod"], "Secret", "taskd-secrets") is None
    used = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for overlay in K8S
        for _, _, c in taskd_containers(rendered[overlay])
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert used == set(base["stringData"])


def test_no_taskd_pod_or_service_waits_for_kafka_or_smtp(
    rendered: dict[str, list[Doc]], image: Image, tmp_path: Path
) -> None:
    """Kafka and mailpit run in dev and compose, but no taskd role may need them to start: dead
    letters and notifications wait in Postgres outboxes (test_roles_start starts every role with
    nothing listening at either address). In dev and compose the notifier mails mailpit."""
    launcher = Launcher(image, tmp_path)
    for overlay in K8S:
        for workload, spec, _ in taskd_containers(rendered[overlay]):
            assert "initContainers" not in spec, workload["metadata"]["name"]
    services = compose()["services"]
    for name, service in services.items():
        if "build" in service:
            assert not {"kafka", "mailpit"} & set(service.get("depends_on", {})), name
    containers = [c for o in K8S for c in k8s_containers(rendered[o], STAND_INS)]
    for c in containers + compose_containers():
        settings = launcher.settings(c)
        assert settings.dlq.bootstrap_servers.split(":")[0] not in ("127.0.0.1", "localhost"), (
            f"{c.name}: in a container, Kafka is not on loopback"
        )
        assert settings.notify.smtp.host not in ("127.0.0.1", "localhost", "::1"), (
            f"{c.name}: in a container, the SMTP relay is not on loopback"
        )
    dev = {(d["kind"], d["metadata"]["name"]) for d in rendered["dev"]}
    for infra in ("postgres", "redis", "kafka", "mailpit", "prometheus", "grafana"):
        assert ("Service", infra) in dev, infra
    assert "mailpit" in services
    notifiers = [
        c
        for c in k8s_containers(rendered["dev"], STAND_INS) + compose_containers()
        if not c.is_job and "notifier" in roles(c.args)
    ]
    assert len(notifiers) == 2, [c.name for c in notifiers]
    for c in notifiers:
        smtp = launcher.settings(c).notify.smtp
        assert (smtp.host, smtp.port) == ("mailpit", 1025), f"{c.name}: {smtp}"


def test_compose_roles_wait_for_migrate_and_probe_their_ports(image: Image, tmp_path: Path) -> None:
    launcher = Launcher(image, tmp_path)
    services = compose()["services"]
    for c in compose_containers():
        service = services[c.name.split("/", 1)[1]]
        if c.is_job:
            assert c.args == ["migrate"] and service["restart"] == "no"
            continue
        wait = service["depends_on"]["migrate"]["condition"]
        assert wait == "service_completed_successfully", c.name
        settings = launcher.settings(c)
        port = settings.api.port if "api" in roles(c.args) else settings.ops.port
        assert [p.port for p in c.probes] == [port], c.name
        if "worker" in roles(c.args):
            assert c.grace_seconds > settings.worker.shutdown_grace_seconds


def test_grafana_provisions_every_dashboard_of_deploy_grafana(
    rendered: dict[str, list[Doc]],
) -> None:
    dashboards = sorted(p.name for p in (ROOT / "deploy" / "grafana").glob("*.json"))
    assert dashboards
    grafana = find(rendered["dev"], "Deployment", "grafana")
    assert grafana is not None
    volumes = {v["name"]: v for v in grafana["spec"]["template"]["spec"]["volumes"]}
    cm = find(rendered["dev"], "ConfigMap", volumes["dashboards"]["configMap"]["name"])
    assert cm is not None, "the dashboards volume names no rendered ConfigMap"
    assert sorted(cm["data"]) == dashboards, "list every dashboard in deploy/kustomization.yaml"
