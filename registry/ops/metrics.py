"""Prometheus text exposition: in-process histograms, and the workers' counters kept in a Redis hash.

Workers are many short-lived processes without an HTTP server; they add their counters
to one Redis hash (``Keys.metrics``) in the pipeline that acknowledges each batch, and
the API renders that hash on /metrics, so one scrape target sees the whole fleet.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import redis.asyncio as aioredis

from registry.keys import Keys

# Seconds; a query or an apply batch beyond 10 s is an incident, not a bucket.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from XADD to applied: backlog delays run to minutes.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


def bucket_index(value: float, buckets: Sequence[float]) -> int:
    """Index of the first bucket whose upper bound holds ``value``; len(buckets) for +Inf."""
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


class Histogram:
    """Per-bucket counts (not cumulative) plus sum and count; cumulated when rendered."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bucket_index(value, self.buckets)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class Exposition:
    """Builds one /metrics body; each metric family gets its HELP and TYPE once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_num(value)}")

    def histogram(self, name: str, hist: Histogram, labels: Mapping[str, str] | None = None) -> None:
        base = dict(labels or {})
        running = 0
        for bound, count in zip((*hist.buckets, math.inf), hist.counts, strict=True):
            running += count
            self.sample(f"{name}_bucket", running, {**base, "le": "+Inf" if bound == math.inf else repr(float(bound))})
        self.sample(f"{name}_sum", hist.sum, base)
        self.sample(f"{name}_count", running, base)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# -- the workers' counters, in a Redis hash ----------------------------------------------

_CONSUMED = "consumed:"
_DEAD = "dead_lettered:"
_CHANGED = "jobs_changed"
_APPLY = "apply"
_DELAY = "delay"


def record_batch(
    pipe: aioredis.client.Pipeline,
    keys: Keys,
    *,
    consumed: Mapping[str, int] | None = None,
    dead_lettered: Mapping[str, int] | None = None,
    changed: int = 0,
    apply_seconds: float | None = None,
    delays: Iterable[float] = (),
) -> None:
    """Queue one batch's counters on ``pipe`` (the caller's acknowledging pipeline: no extra round trip)."""
    fields: Counter[str] = Counter()
    for kind, n in (consumed or {}).items():
        fields[_CONSUMED + kind] += n
    for reason, n in (dead_lettered or {}).items():
        fields[_DEAD + reason] += n
    if changed:
        fields[_CHANGED] += changed
    sums: dict[str, float] = {}
    if apply_seconds is not None:
        fields[f"{_APPLY}:b{bucket_index(apply_seconds, LATENCY_BUCKETS)}"] += 1
        sums[f"{_APPLY}:sum"] = apply_seconds
    delay_sum = 0.0
    for delay in delays:
        fields[f"{_DELAY}:b{bucket_index(delay, DELAY_BUCKETS)}"] += 1
        delay_sum += delay
    if delay_sum:
        sums[f"{_DELAY}:sum"] = delay_sum
    for field, n in fields.items():
        if n:
            pipe.hincrby(keys.metrics, field, n)
    for field, value in sums.items():
        pipe.hincrbyfloat(keys.metrics, field, value)


class WorkerCounters:
    """The workers' counters as read back from the hash."""

    def __init__(self, raw: Mapping[bytes, bytes]) -> None:
        values = {k.decode(): v.decode() for k, v in raw.items()}
        self.consumed = {k[len(_CONSUMED) :]: int(v) for k, v in values.items() if k.startswith(_CONSUMED)}
        self.dead_lettered = {k[len(_DEAD) :]: int(v) for k, v in values.items() if k.startswith(_DEAD)}
        self.changed = int(values.get(_CHANGED, 0))
        self.apply = self._histogram(values, _APPLY, LATENCY_BUCKETS)
        self.delay = self._histogram(values, _DELAY, DELAY_BUCKETS)

    @staticmethod
    def _histogram(values: Mapping[str, str], prefix: str, buckets: Sequence[float]) -> Histogram:
        hist = Histogram(buckets)
        for i in range(len(hist.counts)):
            hist.counts[i] = int(values.get(f"{prefix}:b{i}", 0))
        hist.sum = float(values.get(f"{prefix}:sum", 0.0))
        return hist

    @property
    def consumed_total(self) -> int:
        return sum(self.consumed.values())


async def read_worker_counters(redis: aioredis.Redis, keys: Keys) -> WorkerCounters:
    return WorkerCounters(await redis.hgetall(keys.metrics))  # type: ignore[misc]


def render_worker_counters(out: Exposition, counters: WorkerCounters, event_types: Iterable[str]) -> None:
    out.family(
        "jobreg_events_consumed_total",
        "counter",
        "Valid events the workers read from the events stream, by type (redeliveries included).",
    )
    for kind in event_types:
        out.sample("jobreg_events_consumed_total", counters.consumed.get(kind, 0), {"type": kind})
    out.family(
        "jobreg_events_dead_lettered_total",
        "counter",
        "Entries copied to the dead-letter stream: invalid (bad format) or undeliverable (never applied).",
    )
    for reason in ("invalid", "undeliverable"):
        out.sample("jobreg_events_dead_lettered_total", counters.dead_lettered.get(reason, 0), {"reason": reason})
    out.family("jobreg_jobs_changed_total", "counter", "Job state changes the workers applied.")
    out.sample("jobreg_jobs_changed_total", counters.changed)
    out.family("jobreg_apply_duration_seconds", "histogram", "Time to apply one batch of events to the projection.")
    out.histogram("jobreg_apply_duration_seconds", counters.apply)
    out.family(
        "jobreg_ingest_delay_seconds",
        "histogram",
        "Time from an event's XADD (its entry id) to its batch being applied, by the worker's clock.",
    )
    out.histogram("jobreg_ingest_delay_seconds", counters.delay)
