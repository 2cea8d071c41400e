"""Every Redis key name jobreg uses, built in one place."""

from __future__ import annotations

import copy
import uuid as _uuid

from registry.domain.model import MEMBER_KINDS, Origin, Status


class Keys:
    """Key names under one prefix.

    The two streams keep the names the contract fixes (``<prefix>:events``,
    ``<prefix>:events:dead``). Everything the projection script or a
    multi-key command touches lives under the hash tag ``{<tag>}`` so the
    whole projection maps to one Redis Cluster slot.

    ``tag`` is the prefix itself on a registry of one partition (every key as it always was); a
    partition of a partitioned registry passes its own (registry/partition.py ``Partitions``).
    """

    def __init__(self, prefix: str = "jobreg", tag: str | None = None) -> None:
        self.prefix = prefix
        self.tag = prefix if tag is None else tag
        tag = f"{{{self.tag}}}"
        self._t = tag
        # The number of partitions P, stamped at first start (registry/store/partitions.py): global,
        # under the prefix's own tag whatever the partition.
        self.partitions = f"{{{prefix}}}:partitions"
        # Where producers publish (the contract's name). With one partition the workers consume it
        # directly; a partition of a partitioned registry has its own stream under its tag, which the
        # workers' router (workers/router.py) and direct producers feed.
        self.ingress = f"{prefix}:events"
        partitioned = self.tag != prefix
        self.events = f"{tag}:events" if partitioned else self.ingress
        self.dead = f"{prefix}:events:dead"
        # Bookkeeping beside a stream sits under a hash tag naming that stream: `{x}:y` hashes like
        # the untagged `x`, so each dead-letter and replay step below is one Redis Cluster slot. A
        # partition's stream is already tagged (`{<tag>}:events`), so its bookkeeping takes that tag:
        # a hash tag is the first `{...}` only, `{{<tag>}:events}:failures` would not share its slot.
        ev, dead = (f"{tag}:events" if partitioned else f"{{{self.events}}}"), f"{{{self.dead}}}"
        # Dead-letter markers of every stream share one hash (the dead stream's slot); a partition's
        # entry ids are named with its tag in front, since ids of different streams may coincide.
        self.marker_prefix = f"{self.tag}/" if partitioned else ""
        # entry id -> last apply error, so a dead-letter reason survives the worker that saw it.
        self.failures = f"{ev}:failures"
        # entry id -> how many times applying it failed; dead-lettered at max_apply_failures.
        self.failure_counts = f"{ev}:failures:count"
        # Where the two hashes above lived before they moved into the events stream's slot; a
        # worker adopts what it finds there at start (registry/wire/deadletter.py).
        self.legacy_failures = f"{prefix}:events:failures"
        self.legacy_failure_counts = f"{prefix}:events:failures:count"
        # Dead-lettering is copy, then acknowledge (two slots): source entry id -> its copy's id,
        # set with the copy, so a retry after a crash in between reuses the copy.
        self.dead_sources = f"{dead}:sources"
        # Replay is re-publish, then delete the copy: dead-letter id -> the re-published entry's id.
        self.replayed = f"{ev}:replayed"
        # arq's queue (and, with its ':health-check' suffix, health key) for the worker host. Under the
        # prefix's tag, like the cron names (arq_job), so every arq key is in one Redis Cluster slot.
        self.arq_queue = f"{{{prefix}}}:arq"
        # arq's sorted set of aborted jobs, which arq names `arq:abort` whatever the queue; its worker
        # module global is pointed here (workers/main.py), as arq's own name would be another slot.
        self.arq_abort = f"{{{prefix}}}:arq:abort"
        self.seq = f"{tag}:seq"
        # Fixed-width array: bytes [16*h, 16*h+16) hold the uuid of handle h.
        self.uuids = f"{tag}:uuids"
        self.all = f"{tag}:bm:all"
        self.errors = f"{tag}:bm:errors"
        self.started = f"{tag}:bm:started"
        self.ended = f"{tag}:bm:ended"
        self.status = {s: f"{tag}:bm:status:{s.value}" for s in Status}
        self.origin = {o: f"{tag}:bm:origin:{o.value}" for o in Origin}
        # The first hex digit of each listed job's id, one bitmap per digit (id__starts_with of one digit).
        self.id_hex = {d: f"{tag}:bm:idhex:{d}" for d in "0123456789abcdef"}
        # The stored layout's version (registry/store/layout.py); absent on data written before it existed.
        self.layout = f"{tag}:layout"
        # `jobreg migrate`'s progress, so a killed run resumes (registry/store/migrate.py).
        self.migration = f"{tag}:layout:migration"
        self.stats = f"{tag}:stats"
        # Change log: one entry per change of a listed job, written by the apply script (so tagged).
        self.changes = f"{tag}:changes"
        # The random key that seals page tokens (registry/query/page_token.py), made at first use.
        self.page_token_key = f"{tag}:pagetoken:key"
        # Workers' counters and histogram buckets, exposed by the API's /metrics.
        # Per partition when partitioned: a worker's counters travel with its acknowledgements (one slot).
        self.metrics = f"{tag}:metrics" if partitioned else f"{prefix}:metrics"
        # The router's counters (a registry of several partitions), in the ingress stream's slot likewise.
        self.ingress_metrics = f"{{{self.ingress}}}:metrics"
        self._slices: dict[str, list[str]] = {}

    def routing(self) -> Keys:
        """These names as the ingress router of a registry of several partitions uses them: its stream is
        ``ingress`` (as ``events``), its counters ``ingress_metrics`` (as ``metrics``)."""
        out = copy.copy(self)
        out.metrics = self.ingress_metrics
        return out

    def job(self, job_id: str) -> str:
        return f"{self._t}:job:{job_id}"

    def job_prefix(self) -> str:
        """What every ``job(job_id)`` starts with: scripts that list a page build its records' keys from it."""
        return self.job("")

    def sort(self, field: str) -> str:
        """Base name of the sort index of every listed job by ``field`` (members uuid16 + handle, 4 bytes):
        a B+tree of small sorted sets whose keys, all ``<base>:...`` under this hash tag, are built by
        registry/store/lua/sortlib.lua (its Python side: registry/store/sortidx.py). Layout 7."""
        return f"{self._t}:sx:{field}"

    def sort_set_v6(self, field: str) -> str:
        """The sorted set that held the sort index up to layout 6 (read and dropped by `jobreg migrate`)."""
        return f"{self._t}:z:{field}"

    def member_set(self, kind: str, value: str) -> str:
        assert kind in MEMBER_KINDS
        return f"{self._t}:ms:{kind}:{value}"

    def member_bitmap(self, kind: str, value: str) -> str:
        assert kind in MEMBER_KINDS
        return f"{self._t}:mb:{kind}:{value}"

    def column(self, field: str) -> str:
        """Fixed-width array of ``field`` by handle: a signed 64-bit value at bit offset 64*h (BITFIELD #h)."""
        return f"{self._t}:col:{field}"

    def zone_max(self, field: str) -> str:
        """Zone map of ``field``, upper half: per block of handles, an upper bound of its values (i64 column)."""
        return f"{self._t}:zone:{field}:max"

    def zone_min(self, field: str) -> str:
        """Zone map of ``field``, lower half: per block, a lower bound of its values plus one (0: no value yet)."""
        return f"{self._t}:zone:{field}:min"

    def slice(self, field: str, bit: int) -> str:
        """Bit-sliced index: bit ``bit`` of ``field``'s (scaled) value, one bitmap per bit."""
        return f"{self._t}:bsi:{field}:{bit}"

    def slices(self, field: str, width: int) -> list[str]:
        """``slice(field, bit)`` for bits 0 .. width - 1, built once (the apply path names them per job)."""
        names = self._slices.get(field)
        if names is None or len(names) < width:
            names = self._slices[field] = [self.slice(field, bit) for bit in range(width)]
        return names

    def arq_job(self, name: str) -> str:
        """An arq function/cron name; arq keys job records by it (``arq:job:<name>:<ms>``), so it carries the
        prefix, as a hash tag: on a cluster those keys share the queue's slot, served by one master."""
        return f"{{{self.prefix}}}:{name}"

    def temp(self) -> str:
        return f"{self._t}:tmp:{_uuid.uuid4().hex}"

    def temp_pattern(self) -> str:
        return f"{self._t}:tmp:*"
