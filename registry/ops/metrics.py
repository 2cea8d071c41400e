"""Metrics: the workers' counters kept in a Redis hash, and their Prometheus families (via prometheus-client).

Workers are many short-lived processes without an HTTP server; they add their counters
to one Redis hash (``Keys.metrics``) in the pipeline that acknowledges each batch, and
the API renders that hash on /metrics, so one scrape target sees the whole fleet.
prometheus-client does the exposition (text format, escaping, cumulative buckets); this
module only turns the hash into metric families.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.keys import Keys
from registry.route import Route

# Seconds; a query or an apply batch beyond 10 s is an incident, not a bucket.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from XADD to applied: backlog delays run to minutes.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def bucket_index(value: float, buckets: Sequence[float]) -> int:
    """Index of the first bucket whose upper bound holds ``value``; len(buckets) for +Inf."""
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


@dataclass
class BucketCounts:
    """A histogram as the workers store it: per-bucket counts (not cumulative, last one +Inf) and the sum."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs as prometheus-client's HistogramMetricFamily takes them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*(repr(float(b)) for b in self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


# -- the workers' counters, in a Redis hash ----------------------------------------------

_CONSUMED = "consumed:"
_DEAD = "dead_lettered:"
_CHANGED = "jobs_changed"
_APPLY = "apply"
_DELAY = "delay"
DEAD_LETTER_REASONS = ("invalid", "undeliverable")


def record_batch(pipe: aioredis.client.Pipeline, keys: Keys, **counts: Any) -> None:
    """Queue one batch's counters on ``pipe`` (the caller's acknowledging pipeline: no extra round trip)."""
    for command in batch_commands(keys, **counts):
        pipe.execute_command(*command)


def batch_commands(
    keys: Keys,
    *,
    consumed: Mapping[str, int] | None = None,
    dead_lettered: Mapping[str, int] | None = None,
    changed: int = 0,
    apply_seconds: float | None = None,
    delays: Iterable[float] = (),
) -> list[tuple[str, str, str, str]]:
    """One batch's counters as the commands that add them to the metrics hash (HINCRBY, HINCRBYFLOAT)."""
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
    out = [("HINCRBY", keys.metrics, name, str(n)) for name, n in fields.items() if n]
    return out + [("HINCRBYFLOAT", keys.metrics, name, repr(value)) for name, value in sums.items()]


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
    def _histogram(values: Mapping[str, str], prefix: str, buckets: Sequence[float]) -> BucketCounts:
        hist = BucketCounts(tuple(buckets))
        for i in range(len(hist.counts)):
            hist.counts[i] = int(values.get(f"{prefix}:b{i}", 0))
        hist.sum = float(values.get(f"{prefix}:sum", 0.0))
        return hist

    @property
    def consumed_total(self) -> int:
        return sum(self.consumed.values())


async def read_worker_counters(redis: aioredis.Redis, keys: Keys, route: Route | None = None) -> WorkerCounters:
    """The workers' counters; with a ``route`` of several partitions, summed over every partition's hash
    and the router's (each consumer records its counters beside its acknowledgements, in its stream's slot)."""
    if route is None or route.partitions.count == 1:
        return WorkerCounters(await redis.hgetall(keys.metrics))  # type: ignore[misc]
    hashes = [await redis.hgetall(keys.ingress_metrics)]  # type: ignore[misc]
    hashes += [await route.client(i).hgetall(k.metrics) for i, k in enumerate(route.partitions.keys)]  # type: ignore[misc]
    return WorkerCounters(_summed(hashes))


def _summed(hashes: Sequence[Mapping[bytes, bytes]]) -> dict[bytes, bytes]:
    """Counter hashes added field by field (integers stay integers; sums of seconds are floats)."""
    total: dict[bytes, int | float] = {}
    for values in hashes:
        for name, raw in values.items():
            number: int | float = float(raw) if b"." in raw or b"e" in raw else int(raw)
            total[name] = total.get(name, 0) + number
    return {name: repr(v).encode() if isinstance(v, float) else str(v).encode() for name, v in total.items()}


class WorkerCollector(Collector):
    """A prometheus-client collector over one reading of the workers' hash (built per scrape)."""

    def __init__(self, counters: WorkerCounters, event_types: Iterable[str]) -> None:
        self.counters = counters
        self.event_types = list(event_types)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        c = self.counters
        consumed = CounterMetricFamily(
            "jobreg_events_consumed",
            "Valid events the workers read from the events stream, by type (redeliveries included).",
            labels=["type"],
        )
        for kind in self.event_types:
            consumed.add_metric([kind], c.consumed.get(kind, 0))
        yield consumed
        dead = CounterMetricFamily(
            "jobreg_events_dead_lettered",
            "Entries copied to the dead-letter stream: invalid (bad format) or undeliverable (never applied).",
            labels=["reason"],
        )
        for reason in DEAD_LETTER_REASONS:
            dead.add_metric([reason], c.dead_lettered.get(reason, 0))
        yield dead
        yield CounterMetricFamily("jobreg_jobs_changed", "Job state changes the workers applied.", value=c.changed)
        yield histogram_family(
            "jobreg_apply_duration_seconds", "Time to apply one batch of events to the projection.", c.apply
        )
        yield histogram_family(
            "jobreg_ingest_delay_seconds",
            "Time from an event's XADD (its entry id) to its batch being applied, by the worker's clock.",
            c.delay,
        )


def histogram_family(
    name: str, documentation: str, hist: BucketCounts, labels: Mapping[str, str] | None = None
) -> HistogramMetricFamily:
    labels = dict(labels or {})
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), hist.cumulative(), hist.sum)
    return family


def without_created(families: Iterable[Metric]) -> Iterator[Metric]:
    """The families without ``*_created`` samples: our exposition never had them; scrapers do not need them."""
    for family in families:
        family.samples = [s for s in family.samples if not s.name.endswith("_created")]
        yield family
