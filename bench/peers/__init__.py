"""Benchmarks of peer Python task queues (arq, saq, celery, dramatiq, taskiq, procrastinate)
on the workloads of ``bench.throughput``; see README.md. ``run_peers`` runs them and returns
one dict per peer."""

from bench.peers.runner import PEERS, ROW_KEYS, run_peers

__all__ = ["PEERS", "ROW_KEYS", "run_peers"]
