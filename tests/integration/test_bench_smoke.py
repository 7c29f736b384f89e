"""The benchmarks still run end to end (small sizes; their figures are not asserted, only that
they measured something real): bench/ is code too, and a benchmark that rots goes unnoticed
until the day someone needs its numbers."""

from __future__ import annotations

from bench import latency
from bench.throughput import run_processing


async def test_processing_bench_runs_every_task_to_success() -> None:
    result = await run_processing(300, concurrency=50, workers=2)
    # run_processing itself checks that all 300 are SUCCESS in Postgres.
    assert result.tasks == 300 and result.workers == 2
    assert result.tasks_per_second > 0  # CPU figures may round to 0 on a run this short


async def test_latency_bench_sees_every_task_start() -> None:
    figures = await latency.measure_async(rate=50, seconds=1.0, concurrency=10, warmup=0.2)
    assert figures["non_201"] == 0
    assert figures["tasks"] == 50
    start = figures["submit_to_start"]
    assert 0 < start["p50_ms"] <= start["p99_ms"] <= start["max_ms"]


async def test_floor_bench_sees_every_task_start() -> None:
    from bench import floor

    figures = await floor.measure_async(rate=50, seconds=1.0, warmup=0.2)
    assert figures["non_201"] == 0
    assert figures["tasks"] == 50
    start = figures["submit_to_start"]
    assert 0 < start["p50_ms"] <= start["p99_ms"] <= start["max_ms"]
