"""The data directory of `jobreg up`: the lock one `up` holds on it and the record of the store it runs."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec

LOCK_FILE = "up.lock"
RECORD_FILE = "store.json"
# A reader's brief shared lock (see `running_store`) can make `up`'s exclusive try fail for a moment.
_LOCK_RETRY_S = 0.3


class StoreRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a running `jobreg up` tells the commands run beside it."""

    redis_url: str  # without its password (never written to disk)
    prefix: str
    api_url: str
    pid: int
    # The store needs a password the record leaves out: the command must get JOBREG_REDIS_URL instead.
    password_removed: bool = False


class DataDirBusy(Exception):
    """Another `jobreg up` holds this data directory; ``record`` is what it runs (None if not written yet)."""

    def __init__(self, data_dir: Path, record: StoreRecord | None) -> None:
        self.data_dir = data_dir
        self.record = record
        holder = f" (pid {record.pid}, API {record.api_url})" if record else ""
        super().__init__(f"another `jobreg up` is running with data in {data_dir}/{holder}")


def without_password(url: str) -> tuple[str, bool]:
    """``url`` with any password removed, and whether there was one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, False
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), True


_record_decoder = msgspec.json.Decoder(StoreRecord)


def read_record(data_dir: Path) -> StoreRecord | None:
    try:
        return _record_decoder.decode((data_dir / RECORD_FILE).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


class DataDirLock:
    """The exclusive lock of one `jobreg up` on its data directory, and the store record it publishes there."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.fd = fd  # also handed to the private redis-server, so a store outliving `up` keeps the lock

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (created if missing); DataDirBusy when another `up` holds it."""
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + _LOCK_RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(data_dir, fd)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise DataDirBusy(data_dir, read_record(data_dir)) from None
                time.sleep(0.02)

    def publish(self, redis_url: str, prefix: str, api_url: str) -> StoreRecord:
        """Write the record (atomically: readers never see half a file); the URL loses its password."""
        url, removed = without_password(redis_url)
        record = StoreRecord(redis_url=url, prefix=prefix, api_url=api_url, pid=os.getpid(), password_removed=removed)
        tmp = self.data_dir / f".{RECORD_FILE}.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(record))
        tmp.replace(self.data_dir / RECORD_FILE)
        return record

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / RECORD_FILE).unlink()
        os.close(self.fd)


@contextlib.contextmanager
def holding(data_dir: Path) -> Iterator[DataDirLock]:
    lock = DataDirLock.acquire(data_dir)
    try:
        yield lock
    finally:
        lock.release()


def running_store(data_dir: Path) -> StoreRecord | None:
    """The store of the `jobreg up` running on ``data_dir``; None when none runs (a leftover record is ignored)."""
    record = read_record(data_dir)
    if record is None:
        return None
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return record  # held: its `up` (or the store it started) is alive
    finally:
        os.close(fd)  # closing drops the shared lock if we got it
    return None
