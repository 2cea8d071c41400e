"""The rebalance planner (registry/ops/rebalance.py): which partition slots move where when a cluster grows."""

from __future__ import annotations

from collections import Counter

from registry.ops.rebalance import Move, parse_nodes, plan

A, B, C, D, E, F = (("127.0.0.1", 7000 + i) for i in range(6))


def _after(owners: list[tuple[str, int]], slots: list[int], moves: list[Move]) -> list[tuple[str, int]]:
    out = list(owners)
    for move in moves:
        assert all(out[i] == move.source and slots[i] == move.slot for i in move.partitions)
        for i in move.partitions:
            out[i] = move.target
    return out


def test_three_to_six_masters_moves_about_half_the_partitions_once_each() -> None:
    owners = [(A, B, C)[i % 3] for i in range(16)]
    slots = list(range(100, 116))
    moves = plan(owners, [A, B, C, D, E, F], slots)
    after = Counter(_after(owners, slots, moves))
    assert sorted(after.values()) == [2, 2, 3, 3, 3, 3] and set(after) == {A, B, C, D, E, F}
    assert len(moves) == 7  # 6, 5, 5 down to 3 each: the fewest moves (16 - 9 kept)
    assert len({m.slot for m in moves}) == len(moves)  # no partition moves twice
    assert {m.target for m in moves} == {D, E, F}


def test_balanced_plans_nothing() -> None:
    owners = [(A, B, C)[i % 3] for i in range(16)]
    assert plan(owners, [A, B, C], list(range(16))) == []


def test_partitions_sharing_a_slot_move_together() -> None:
    owners = [A, A, A, A]
    slots = [5, 5, 6, 7]
    moves = plan(owners, [A, B], slots)
    after = _after(owners, slots, moves)
    assert Counter(after) == Counter({A: 2, B: 2})
    assert after[0] == after[1]


def test_parse_nodes_keeps_serving_masters_and_open_moves() -> None:
    text = "\n".join(
        [
            "aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [93->-ddd]",
            "bbb 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922",
            "ccc 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected",
            "ddd 127.0.0.1:7003@17003 master - 0 0 4 connected [93-<-aaa]",
            "eee 127.0.0.1:7004@17004 slave aaa 0 0 1 connected",
        ]
    )
    masters, open_moves = parse_nodes(text)
    assert [(m.id, m.address) for m in masters] == [("aaa", A), ("bbb", B), ("ddd", D)]
    assert open_moves == {93: ("aaa", "ddd")}
