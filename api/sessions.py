"""This process's open watch streams: how many one caller and the process may hold, and ending them all at shutdown."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from api.heap import HeapTrimmer
from registry.errors import TooManyWatches


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Slot:
    """One admitted stream: counted from ``Streams.reserve`` until ``Streams.release`` (idempotent)."""

    __slots__ = ("caller", "released", "stream")

    def __init__(self, caller: str) -> None:
        self.caller = caller
        self.stream: Stoppable | None = None
        self.released = False


class Streams:
    """Admission and shutdown of watch streams.

    Every open stream holds a buffer, a subscription and a socket, so they are bounded: per caller
    (one user cannot take the process's share) and per process (what it serves in memory). A
    slot is reserved before the watch starts reading, so concurrent requests cannot overshoot.
    """

    def __init__(self, per_caller: int, total: int, trimmer: HeapTrimmer | None = None) -> None:
        self.per_caller = per_caller
        self.trimmer = trimmer
        self.total = total
        self._by_caller: Counter[str] = Counter()
        self._slots: set[Slot] = set()
        self.draining = False
        self.refused = 0

    @property
    def open(self) -> int:
        return len(self._slots)

    def reserve(self, caller: str) -> Slot:
        """A slot for ``caller``; TooManyWatches past either bound, or once the process is shutting down."""
        if self.draining:
            self.refused += 1
            raise TooManyWatches("the server is shutting down; reconnect shortly", per_caller=False)
        if len(self._slots) >= self.total:
            self.refused += 1
            raise TooManyWatches(f"this server holds its maximum of {self.total} watch streams", per_caller=False)
        if self._by_caller[caller] >= self.per_caller:
            self.refused += 1
            raise TooManyWatches(f"at most {self.per_caller} open watch streams per caller", per_caller=True)
        slot = Slot(caller)
        self._by_caller[caller] += 1
        self._slots.add(slot)
        return slot

    def attach(self, slot: Slot, stream: Stoppable) -> None:
        """Let ``drain`` end ``stream``; one attached while draining is stopped at once."""
        slot.stream = stream
        if self.draining:
            stream.stop()

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._slots.discard(slot)
        self._by_caller[slot.caller] -= 1
        if self._by_caller[slot.caller] <= 0:
            del self._by_caller[slot.caller]  # no entry per caller ever seen: the map stays small
        if self.trimmer is not None:
            self.trimmer.request()

    def drain(self) -> int:
        """Refuse new streams and stop every open one (each ends with a reconnect event); how many were open."""
        self.draining = True
        for slot in list(self._slots):
            if slot.stream is not None:
                slot.stream.stop()
        return len(self._slots)
