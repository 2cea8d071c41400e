"""The write path's own RESP packer writes exactly what redis-py's packer writes."""

from __future__ import annotations

from redis.connection import PythonRespSerializer

from registry.store.resp import pack_command


def test_packing_matches_redis_py() -> None:
    args = (b"EVALSHA", "abc", 3, "k:{t}:é", b"\x00\r\n\xff", -17, "", b"")
    theirs = b"".join(PythonRespSerializer(6000, lambda a: a if isinstance(a, bytes) else str(a).encode()).pack(*args))
    assert pack_command(*args) == theirs
