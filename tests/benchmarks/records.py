"""The record's state codec: bytes per state and the cost of a page's decode, compact (layout 6) vs msgpack (5).

    .venv/bin/python -m tests.benchmarks.records [--jobs 20000]

States are folded from the benchmark's generated jobs (datagen.py). A page is 100 consecutive
jobs, as the query path decodes them (then renders them with to_job, timed beside for scale);
"cold" clears the codec's id caches before every page, "warm" reads the same page again. The list's
job rendered straight from the stored state (record.render_job, what the API runs) is timed beside
decode + to_job (the path it replaced). Best of --repeat runs, in-process; compare the columns of
one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgspec

from registry.domain.fold import fold, to_job
from registry.domain.model import JobState
from registry.store import record
from registry.wire.events import decode_event
from tests.benchmarks.datagen import iter_jobs, job_events, make_plan

PAGE = 100


def best(f: Callable[[], object], repeat: int, before: Callable[[], object] | None = None) -> float:
    """Best wall time of ``f`` in µs over ``repeat`` runs (``before`` runs untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e6


def clear_caches() -> None:
    record._TEXTS.clear()
    record._BYTES.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    states: list[JobState] = []
    for chunk in iter_jobs(make_plan(args.jobs, seed=1), chunk_size=1000):
        for job in chunk:
            states.append(fold(job["id"], [decode_event(f) for f in job_events(job)]))
    legacy_encode = msgspec.msgpack.Encoder().encode
    legacy_decode = msgspec.msgpack.Decoder(JobState).decode
    legacy = [legacy_encode(s) for s in states]
    compact = [record.encode_state(s) for s in states]
    for s, c in zip(states, compact, strict=True):
        assert record.decode_state(c, s.job_id) == s
    print(f"{len(states):,} states: msgpack {statistics.mean(map(len, legacy)):.0f} B, ", end="")
    print(f"compact {statistics.mean(map(len, compact)):.0f} B (max {max(map(len, compact))}) per state")
    # Pages from across the data set: cold caches see ids they never saw.
    starts = range(0, len(states) - PAGE, max(PAGE, len(states) // 20))
    rows: dict[str, list[float]] = {
        k: [] for k in ("msgpack", "compact cold", "compact warm", "to_job", "decode+to_job", "render", "enc5", "enc6")
    }
    for at in starts:
        page = states[at : at + PAGE]
        ids = [s.job_id for s in page]
        lp, cp = legacy[at : at + PAGE], compact[at : at + PAGE]
        rows["msgpack"].append(best(lambda lp=lp: [legacy_decode(b) for b in lp], args.repeat))
        rows["compact cold"].append(
            best(
                lambda cp=cp, ids=ids: [record.decode_state(b, i) for b, i in zip(cp, ids, strict=True)],
                args.repeat,
                clear_caches,
            )
        )
        rows["compact warm"].append(
            best(lambda cp=cp, ids=ids: [record.decode_state(b, i) for b, i in zip(cp, ids, strict=True)], args.repeat)
        )
        rows["to_job"].append(best(lambda page=page: [to_job(s, 1) for s in page], args.repeat))
        # What a list page cost before render_job (decode, then to_job), and what it costs now.
        rows["decode+to_job"].append(
            best(
                lambda cp=cp, ids=ids: [to_job(record.decode_state(b, i), 1) for b, i in zip(cp, ids, strict=True)],
                args.repeat,
            )
        )
        rows["render"].append(
            best(lambda cp=cp, ids=ids: [record.render_job(b, i, 1) for b, i in zip(cp, ids, strict=True)], args.repeat)
        )
        rows["enc5"].append(best(lambda page=page: [legacy_encode(s) for s in page], args.repeat))
        rows["enc6"].append(best(lambda page=page: [record.encode_state(s) for s in page], args.repeat, clear_caches))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"per page of {PAGE}, median over {len(rows['msgpack'])} pages (µs):")
    print(f"  decode: msgpack {med['msgpack']:.0f}, compact {med['compact cold']:.0f} cold", end="")
    print(f" / {med['compact warm']:.0f} warm; to_job {med['to_job']:.0f} for scale")
    print(f"  the list's job from a stored state: decode + to_job {med['decode+to_job']:.0f}, ", end="")
    print(f"render_job {med['render']:.0f} (warm)")
    print(f"  encode: msgpack {med['enc5']:.0f}, compact {med['enc6']:.0f} (cold)")


if __name__ == "__main__":
    main()
