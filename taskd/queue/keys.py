"""Every Redis key taskd uses is built here, and each carries its queue's ``{q}`` hash tag so all
keys of one queue live in one Redis Cluster slot and scripts run unchanged on a cluster."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "taskd"
# One channel for every queue: PUBLISH reaches every node of a Redis Cluster, and a worker
# serving several queues needs one subscription.
CANCEL_CHANNEL = "taskd:cancel"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    queue: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{{self.queue}}}"

    @property
    def ready(self) -> str:
        return f"{self._base}:ready"

    @property
    def delayed(self) -> str:
        return f"{self._base}:delayed"

    @property
    def active(self) -> str:
        return f"{self._base}:active"

    @property
    def idle(self) -> str:
        """Idle lease loops waiting for a hand-off (lua/_handoff.lua)."""
        return f"{self._base}:idle"

    @property
    def inbox_prefix(self) -> str:
        """An idle lease loop's inbox is ``<inbox_prefix><registration>``, built in scripts."""
        return f"{self._base}:inbox:"

    @property
    def lease_prefix(self) -> str:
        """Lease keys are ``<lease_prefix><task id>``, built inside scripts."""
        return f"{self._base}:lease:"

    @property
    def cancel_prefix(self) -> str:
        """Cancel markers are ``<cancel_prefix><task id>``, built inside scripts."""
        return f"{self._base}:cancel:"

    def lease(self, task_id: str) -> str:
        return f"{self.lease_prefix}{task_id}"


# Keys that belong to no queue. Worker presence keys share the {workers} hash tag, so the
# presence scripts, which touch several of them, stay in one Redis Cluster slot.
WORKERS_LIVE = f"{PREFIX}:{{workers}}:live"
WORKER_INFO_PREFIX = f"{PREFIX}:{{workers}}:info:"


def worker_info(worker_id: str) -> str:
    return f"{WORKER_INFO_PREFIX}{worker_id}"


def ui_session(digest: str) -> str:
    """A dashboard session, under the SHA-256 of its cookie (the cookie itself is not stored)."""
    return f"{PREFIX}:ui:session:{digest}"


def ui_login_ticket(digest: str) -> str:
    """A one-time sign-in link (``taskd token --ui``), under the SHA-256 of its ticket."""
    return f"{PREFIX}:ui:ticket:{digest}"
