"""The write path's own RESP packer writes exactly what redis-py's packer writes."""

from __future__ import annotations

from redis.connection import PythonRespSerializer

from registry.store.resp import bulk, pack_command, pack_each


def test_packing_matches_redis_py() -> None:
    args = (b"EVALSHA", "abc", 3, "k:{t}:é", b"\x00\r\n\xff", -17, "", b"")
    theirs = b"".join(PythonRespSerializer(6000, lambda a: a if isinstance(a, bytes) else str(a).encode()).pack(*args))
    assert pack_command(*args) == theirs


def test_shared_parts_pack_as_whole_commands() -> None:
    ids = [b"1-0", b"22-1", b"\x00\r\n"]
    assert pack_command(b"XACK", "s", "g", tail=bulk(ids)) == pack_command(b"XACK", "s", "g", *ids)
    assert pack_command(b"PING", tail=bulk([])) == pack_command(b"PING")
    keys = ["a", "k:{t}:é", ""]
    assert pack_each((b"HMGET",), keys, ("v", b"s")) == b"".join(pack_command(b"HMGET", k, "v", b"s") for k in keys)
