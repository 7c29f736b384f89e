"""Submitting tasks with dependencies: whole DAGs, or one task on existing parents.

The pure taskd.dag module validates the graph and decides which tasks start, wait or are cut
off; this service locks the existing parents, stores everything in one transaction and queues
what may run (DESIGN §5, DAG).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.submit import SubmitService, Submitted
from taskd.dag import DagError, Graph
from taskd.ids import uuid7
from taskd.store import dags
from taskd.store.dags import GraphTask
from taskd.store.tasks import NewTask

ENDED = frozenset({"FAILED", "CANCELLED", "UPSTREAM_FAILED"})


@dataclass(frozen=True)
class Node:
    key: str
    task: NewTask
    depends_on: list[str]


@dataclass(frozen=True)
class Plan:
    items: list[GraphTask]
    edges: list[tuple[uuid.UUID, uuid.UUID]]


def external_ids(nodes: Sequence[Node]) -> set[str]:
    """Dependencies that are not keys of the graph must be ids of existing tasks."""
    keys = {n.key for n in nodes}
    out = set()
    for n in nodes:
        for dep in n.depends_on:
            if dep in keys:
                continue
            try:
                out.add(str(uuid.UUID(dep)))
            except ValueError:
                continue  # reported as an unknown key by the graph validation
    return out


def plan(nodes: Sequence[Node], parents: dict[str, asyncpg.Record]) -> Plan:
    """Decide each task's status and unmet count from the graph and its existing parents."""
    normalised = [(n.key, [_norm(d, parents) for d in n.depends_on]) for n in nodes]
    try:
        graph, external = Graph.build(normalised, external=parents)
    except DagError as e:
        raise _dag_problems(e) from e
    by_key = {n.key: n for n in nodes}
    failed_root = {
        key: next(parents[p] for p in ext if parents[p]["status"] in ENDED)
        for key, ext in external.items()
        if any(parents[p]["status"] in ENDED for p in ext)
    }
    cut = {k: failed_root[k] for k in failed_root}
    for key in graph.order():
        for parent in graph.parents[key]:
            if parent in cut and key not in cut:
                cut[key] = cut[parent]
    items, edges = [], []
    for key in graph.order():
        node = by_key[key]
        ext = external[key]
        unmet = len(graph.parents[key]) + sum(parents[p]["status"] != "SUCCESS" for p in ext)
        edges += [(by_key[p].task.id, node.task.id) for p in graph.parents[key]]
        edges += [(uuid.UUID(p), node.task.id) for p in ext]
        if key in cut:
            items.append(GraphTask(node.task, "UPSTREAM_FAILED", unmet, key, _cut_error(cut[key])))
        else:
            items.append(GraphTask(node.task, "WAITING" if unmet else "PENDING", unmet, key))
    return Plan(items, edges)


def _norm(dep: str, parents: dict[str, asyncpg.Record]) -> str:
    try:
        as_id = str(uuid.UUID(dep))
    except ValueError:
        return dep
    return as_id if as_id in parents else dep


def _cut_error(root: asyncpg.Record) -> dict[str, Any]:
    name = root["dag_key"] or str(root["id"])
    return {
        "type": "UpstreamFailed",
        "retryable": False,
        "message": f"upstream task {name} ({root['id']}) did not succeed",
    }


def _dag_problems(e: DagError) -> ApiError:
    details = [
        problem(f"tasks[{p.index}].{'key' if p.kind == 'duplicate' else 'depends_on'}", p.detail)
        for p in e.problems
    ]
    return validation_error(details, str(e))


class GraphService:
    def __init__(self, submit: SubmitService) -> None:
        self.submit = submit
        self.store = submit.store

    async def submit_dag(self, tenant: str, name: str, nodes: Sequence[Node]) -> uuid.UUID:
        """Store a whole graph or nothing; returns the DAG's id."""
        dag_id = uuid7()
        async with self.store.transaction() as conn:
            parents = await self._lock(conn, external_ids(nodes), tenant)
            p = plan(nodes, parents)
            rows = await dags.insert_graph(conn, p.items, (dag_id, tenant, name))
            if len(rows) != len(p.items):
                raise ApiError(
                    409, "idempotency_conflict", "an idempotency key of this DAG is already in use"
                )
            await dags.insert_edges(conn, p.edges)
        await self.submit.enqueue_pending(rows)
        return dag_id

    async def submit_task(self, tenant: str, new: NewTask, depends_on: list[str]) -> Submitted:
        """One task on existing parents (``depends_on`` of POST /v1/tasks)."""
        node = Node(str(new.id), new, depends_on)
        async with self.store.transaction() as conn:
            parents = await self._lock(conn, external_ids([node]), tenant)
            p = plan([node], parents)
            items = [GraphTask(i.task, i.status, i.unmet, None, i.error) for i in p.items]
            rows = await dags.insert_graph(conn, items, None)
            if rows:
                await dags.insert_edges(conn, p.edges)
        if not rows:
            return Submitted(await self.submit.replay(new), replayed=True)
        await self.submit.enqueue_pending(rows)
        return Submitted(rows[0], replayed=False)

    async def _lock(self, conn: Any, ids: set[str], tenant: str) -> dict[str, asyncpg.Record]:
        found = await dags.lock_parents(conn, [uuid.UUID(i) for i in ids], tenant)
        missing = sorted(ids - {str(k) for k in found})
        if missing:  # another tenant's task is exactly as unknown as a missing one
            raise ApiError(
                404,
                "not_found",
                f"depends_on names unknown tasks: {', '.join(missing)}",
                [problem("depends_on", f"no such task {m}") for m in missing],
            )
        return {str(k): v for k, v in found.items()}
