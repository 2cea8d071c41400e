"""Domain errors; the API maps them to HTTP responses in one place."""

from __future__ import annotations


class JobregError(Exception):
    """Base of every error jobreg raises on purpose."""


class InvalidEvent(JobregError):
    """A stream entry that breaks the wire format; ``reason`` goes to the dead-letter entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidQuery(JobregError):
    """One or more bad query parameters: ``errors`` is a list of (param, message, type)."""

    def __init__(self, errors: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m, _ in errors))
        self.errors = errors


class QueryTooLong(JobregError):
    """A query string past the size any valid query needs; refused before parsing it."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"query string of {size} bytes exceeds the {limit}-byte limit")
        self.size, self.limit = size, limit


class JobNotFound(JobregError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class StoreUnavailable(JobregError):
    """Redis could not be reached; callers answer 503 and retry later."""


class LayoutMismatch(JobregError):
    """The store holds a layout this code does not understand; the message says what to run (`jobreg migrate`)."""


class PartitionsMismatch(LayoutMismatch):
    """JOBREG_PARTITIONS disagrees with the number of partitions stored in the registry (fixed at its first start)."""


class Unauthorized(JobregError):
    """A request without acceptable credentials; ``reason`` is fixed text, never the token itself.

    ``presented`` tells whether a bearer token was offered at all (RFC 6750: only then does the
    challenge carry ``error="invalid_token"``).
    """

    def __init__(self, reason: str, *, presented: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented


class AuthConfigError(JobregError):
    """The JOBREG_AUTH_* settings are incomplete, inconsistent or point at unusable key material."""


class TooManyWatches(JobregError):
    """A watch stream past a bound: the caller's (``per_caller``, 429) or the process's (503); retry later."""

    def __init__(self, reason: str, *, per_caller: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.per_caller = per_caller


class NotDurable(JobregError):
    """Published events the server did not confirm as durable: ``pending`` indexes (into the events given) of
    those not written, or written but copied to fewer than the wanted replicas (``WAIT``). Publishing them
    again is the fix and is harmless: an event's ``event_id`` makes a repeat a no-op in the fold."""

    def __init__(
        self, message: str, pending: list[int], acknowledged: int, wanted: int, entries: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.pending, self.acknowledged, self.wanted = pending, acknowledged, wanted
        # The entry id each event got ("" where no reply came back): those not pending are published.
        self.entries = entries or []
