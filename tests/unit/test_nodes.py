"""The cluster route's pure parts: a node's URL from the seed URL, and CLUSTER SLOTS read into ranges."""

from __future__ import annotations

from registry.connection import node_url
from registry.nodes import SlotRange, parse_slots


def test_a_node_url_keeps_everything_but_the_address() -> None:
    assert node_url("redis://:p%40ss@seed:6379/0", "10.0.0.2", 7001) == "redis://:p%40ss@10.0.0.2:7001/0"
    tls = "rediss://user:pw@seed.example:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    assert (
        node_url(tls, "node-2", 6380)
        == "rediss://user:pw@node-2:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    )
    assert node_url("redis://seed", "::1", 7000) == "redis://[::1]:7000"


def test_cluster_slots_rows_become_ranges() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id-a"], [b"127.0.0.1", 7003, b"id-d"]],
        [5461, 10922, [b"", 7001, b"id-b"]],  # an empty host: the node asked
        [10923, 16000, ["node-3", 7002, "id-c"], ["node-6", 7005, "id-f", {}], ["?", 7006, "id-g"]],
        [16001, 16383, ["?", 7004, "id-e"]],  # an endpoint the cluster does not know: left out
    ]
    assert parse_slots(reply, ("10.1.1.1", 7001)) == [
        SlotRange(0, 5460, ("127.0.0.1", 7000), (("127.0.0.1", 7003),)),
        SlotRange(5461, 10922, ("10.1.1.1", 7001), ()),
        SlotRange(10923, 16000, ("node-3", 7002), (("node-6", 7005),)),
    ]
