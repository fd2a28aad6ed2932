"""The sealing policy, driven by a fake clock: no test here sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentdb.index import IndexSpec, SegmentedIndex, _sealed, _segments
from latentdb.index._sealed import SealedSegment
from latentdb.index._sealing import SEAL_QUIET_SECONDS, SealingPolicy, SystemClock
from latentdb.index._segments import merge_tier
from tests._segments import clustered


class FakeTimer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback, self.cancelled = due, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when a test says; timers run on the test's thread."""

    def __init__(self) -> None:
        self.time = 0.0
        self.timers: list[FakeTimer] = []

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.time + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, running each timer that falls due (in order of due time)."""
        end = self.time + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.due <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.due)
            self.timers.remove(timer)
            self.time = max(self.time, timer.due)
            timer.callback()
        self.time = end


def policy(
    clock: FakeClock, overdue: Callable[[], bool] = lambda: False
) -> tuple[Any, list[float]]:
    seals: list[float] = []
    made = SealingPolicy(
        lock=threading.RLock(),
        seal=lambda: seals.append(clock.now()),
        overdue=overdue,
        clock=clock,
        quiet_seconds=1.0,
    )
    return made, seals


def test_a_seal_waits_for_writes_to_pause() -> None:
    clock = FakeClock()
    sealing, seals = policy(clock)
    sealing.wrote()
    clock.advance(0.6)
    sealing.wrote()  # a write 0.6 s in: the quiet second starts again
    clock.advance(0.9)
    assert seals == []
    clock.advance(0.2)
    assert seals == [pytest.approx(1.6)]
    assert not sealing.pending


def test_writes_that_never_pause_seal_once_overdue() -> None:
    clock = FakeClock()
    rows = [0]
    sealing, seals = policy(clock, overdue=lambda: rows[0] >= 2000)
    for _ in range(30):  # a write every 0.1 s, 100 rows each: never a quiet second
        rows[0] += 100
        sealing.wrote()
        clock.advance(0.1)
    assert seals[0] == pytest.approx(2.0)  # the first check after 2,000 rows
    assert sealing.pending  # still checking: writes go on


def test_a_seal_that_asks_for_a_retry_leaves_one_check_pending() -> None:
    """Another process holds the seal's claim, so every check asks to retry while writes
    go on: one timer stays pending (a retry and a re-arm each used to add one, and the
    timers doubled into hundreds of threads waiting on the store's lock)."""
    clock = FakeClock()
    holder: list[SealingPolicy] = []
    checks: list[float] = []

    def seal() -> None:
        checks.append(clock.now())
        holder[0].retry()

    sealing = SealingPolicy(
        lock=threading.RLock(), seal=seal, overdue=lambda: True, clock=clock, quiet_seconds=1.0
    )
    holder.append(sealing)
    for _ in range(100):  # a write every 0.1 s for 10 s, the seal overdue throughout
        sealing.wrote()
        clock.advance(0.1)
    live = [timer for timer in clock.timers if not timer.cancelled]
    assert len(live) == 1
    assert 5 <= len(checks) <= 11  # about one check a quiet second, not doubling


def test_cancel_and_stop_drop_the_pending_check() -> None:
    clock = FakeClock()
    sealing, seals = policy(clock)
    sealing.wrote()
    sealing.cancel()
    clock.advance(5)
    assert seals == [] and not sealing.pending
    sealing.wrote()
    sealing.stop()
    clock.advance(5)
    sealing.wrote()  # stopped: nothing is scheduled again
    assert seals == [] and not sealing.pending


def test_the_system_clock_is_the_default() -> None:
    sealing = SealingPolicy(lock=threading.RLock(), seal=lambda: None, overdue=lambda: False)
    assert isinstance(sealing.clock, SystemClock)
    assert sealing.quiet_seconds == SEAL_QUIET_SECONDS
    fired = threading.Event()
    SystemClock().call_later(0.0, fired.set)
    assert fired.wait(5)


def segmented(folder: Path, clock: FakeClock, seal_rows: int = 500) -> SegmentedIndex:
    return SegmentedIndex(
        dimension=16,
        metric="cosine",
        spec=IndexSpec(kind="hnsw", seal_rows=seal_rows),
        folder=folder,
        lock=threading.RLock(),
        clock=clock,
    )


def write(index: SegmentedIndex, start: int, vectors: np.ndarray) -> None:
    keys = np.arange(start, start + vectors.shape[0], dtype=np.int64)
    with index.lock:
        index.apply(keys, vectors, keys + 1, np.empty(0, np.int64), int(keys[-1]) + 1)


def test_the_growing_segment_is_sealed_in_the_background_while_queries_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    index = segmented(tmp_path, clock)
    vectors = clustered(800)
    release = threading.Event()
    building = threading.Event()
    real_build = SealedSegment.build

    def held_build(**arguments: Any) -> SealedSegment:
        building.set()
        assert release.wait(30)
        return real_build(**arguments)

    monkeypatch.setattr(SealedSegment, "build", held_build)
    write(index, 0, vectors[:600])
    clock.advance(SEAL_QUIET_SECONDS / 2)
    assert index.status().building is False
    clock.advance(SEAL_QUIET_SECONDS)
    assert building.wait(30) and index.status().building
    # Writes and queries go on while the segment builds.
    write(index, 600, vectors[600:])
    with index.lock:
        index.apply(
            np.array([0], np.int64),
            vectors[1:2],
            np.array([900], np.int64),
            np.empty(0, np.int64),
            900,
        )
        _, found = index.search(vectors[1:2], 2)
    assert sorted(found[0].tolist()) == [0, 1]
    release.set()
    index.wait()
    status = index.status()
    assert (status.segments, status.kind, status.building) == (1, "hnsw", False)
    assert status.indexed + status.pending == 800
    with index.lock:
        _, found = index.search(vectors[2:3], 1)
        assert found[0, 0] == 2
        assert index.vectors_of(np.array([0], np.int64))[0] == pytest.approx(vectors[1])
    index.close(wait=True)


def test_an_index_under_writes_that_never_pause_is_sealed_once_overdue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_segments, "_SEAL_QUIET_SECONDS", 0.5)
    clock = FakeClock()
    index = segmented(tmp_path, clock)
    vectors = clustered(2000)
    for start in range(0, 2000, 100):  # 100 rows every 0.1 s: never 0.5 s of quiet
        write(index, start, vectors[start : start + 100])
        clock.advance(0.1)
        if index.status().building or index.status().segments:
            break
    index.wait()
    status = index.status()
    assert status.segments == 1 and status.indexed >= 900
    assert start + 100 >= 1000  # sealed only once the growing segment was overdue
    index.close(wait=True)


def test_an_index_without_a_folder_never_seals(tmp_path: Path) -> None:
    clock = FakeClock()
    index = SegmentedIndex(
        dimension=16,
        metric="cosine",
        spec=IndexSpec(kind="hnsw", seal_rows=100),
        folder=None,
        lock=threading.RLock(),
        clock=clock,
    )
    write(index, 0, clustered(300))
    clock.advance(10)
    assert clock.timers == [] and index.status().segments == 0


def test_once_a_graph_holds_rows_deltas_seal_small_and_merge_by_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 150)
    monkeypatch.setattr(SealingPolicy, "quiet", lambda self: False)  # writes never pause
    clock = FakeClock()
    index = segmented(tmp_path, clock, seal_rows=1000)
    vectors = clustered(2200)
    write(index, 0, vectors[:1000])
    clock.advance(SEAL_QUIET_SECONDS * 2)
    index.wait()
    assert (index.status().segments, index.status().pending) == (1, 0)
    sizes = []
    for start in range(1000, 1600, 150):  # four deltas of 150 rows, each sealed alone
        write(index, start, vectors[start : start + 150])
        assert index.status().pending == 150
        clock.advance(SEAL_QUIET_SECONDS * 2)
        index.wait()
        sizes.append(sorted(segment.live for _, segment in index.sealed))
    assert sizes[:3] == [[150, 1000], [150, 150, 1000], [150, 150, 150, 1000]]
    # The fourth delta made a tier of four small segments: merged into one.
    index.wait()
    assert sorted(segment.live for _, segment in index.sealed) == [600, 1000]
    with index.lock:
        index.apply(
            np.empty(0, np.int64), vectors[:0], None, np.arange(1000, 1100, dtype=np.int64),
            3000,
        )  # fmt: skip
        _, found = index.search(vectors[:1], 2000, exact=True)
    assert sorted(found[0].tolist()) == list(range(1000)) + list(range(1100, 1600))
    assert index.status().pending == 0 and index.status().deleted == 100
    reopened = segmented(tmp_path, FakeClock(), seal_rows=1000)
    reopened.load()
    assert sorted(segment.live for _, segment in reopened.sealed) == [600, 1000]
    index.close(wait=True)
    reopened.close(wait=True)


def test_a_delta_seals_while_a_merge_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge holds no seal back: while one runs (held here until the test lets it go),
    a new delta is sealed and installed, rows changed meanwhile stay in their newest
    place, and the merge then replaces only the segments it read."""
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 150)
    monkeypatch.setattr(SealingPolicy, "quiet", lambda self: False)  # writes never pause
    clock = FakeClock()
    index = segmented(tmp_path, clock, seal_rows=1000)
    vectors = clustered(2400)
    write(index, 0, vectors[:1000])
    clock.advance(SEAL_QUIET_SECONDS * 2)
    index.wait()
    for start in range(1000, 1450, 150):  # three deltas: one short of a merge
        write(index, start, vectors[start : start + 150])
        clock.advance(SEAL_QUIET_SECONDS * 2)
        index.wait()
    release = threading.Event()
    build = SealedSegment.build

    def held_merge(**arguments: Any) -> SealedSegment:
        if arguments["keys"].shape[0] == 600:  # the merge of the four deltas
            assert release.wait(30)
        return build(**arguments)

    monkeypatch.setattr(SealedSegment, "build", staticmethod(held_merge))
    write(index, 1450, vectors[1450:1600])  # the fourth delta: then the merge starts
    clock.advance(SEAL_QUIET_SECONDS * 2)
    deadline = time.monotonic() + 30
    while index._merger is None:  # the seal's end starts the merge
        assert time.monotonic() < deadline
        time.sleep(0.01)
    moved = np.arange(1000, 1010, dtype=np.int64)  # rows of a delta the merge reads...
    with index.lock:  # ...replaced while it runs (new versions: later sequences)
        index.apply(moved, vectors[2000:2010], moved + 5000, np.empty(0, np.int64), 6010)
    write(index, 1600, vectors[1600:1750])  # a delta, sealed beside the merge
    clock.advance(SEAL_QUIET_SECONDS * 2)
    builder = index._builder
    if builder is not None:
        builder.join()
    assert index._merger is not None and index._merger.is_alive()
    sizes = sorted(segment.live for _, segment in index.sealed)
    assert sizes == [140, 150, 150, 150, 160, 1000]  # the new delta holds the moved rows
    release.set()
    index.wait()
    assert sorted(segment.live for _, segment in index.sealed) == [160, 590, 1000]
    with index.lock:
        _, found = index.search(vectors[:1], 3000, exact=True)
    assert sorted(found[0].tolist()) == list(range(1750))  # each row once
    with index.lock:
        distances, keys = index.search(vectors[2000:2010], 1, exact=True)
    assert keys[:, 0].tolist() == moved.tolist() and np.allclose(distances, 0, atol=1e-5)
    index.close(wait=True)


@pytest.mark.parametrize(
    ("sizes", "merged"),
    [
        ([100_000, 2_500, 2_500, 2_500], []),  # three deltas: not yet
        ([100_000, 2_500, 2_500, 2_500, 2_400], [2_400, 2_500, 2_500, 2_500]),
        # Merged segments beside a new delta: their own tier is full.
        ([100_000, 2_500, 10_000, 10_000, 9_000, 10_000], [9_000, 10_000, 10_000, 10_000]),
        ([100_000, 2_500, 10_000, 10_000, 9_000], []),
        ([1_000] * 10, [1_000] * 8),  # at most twice the count at once
    ],
)
def test_the_smallest_full_size_tier_merges(sizes: list[int], merged: list[int]) -> None:
    class Sized:
        def __init__(self, live: int) -> None:
            self.live = live

    assert [segment.live for segment in merge_tier([Sized(size) for size in sizes])] == merged


def test_once_writes_pause_the_deltas_merge_whatever_their_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deltas beside the graph are one short of a full tier: while writes go on they
    stay, and once writes pause they merge into one, so queries search two segments."""
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 150)
    clock = FakeClock()
    index = segmented(tmp_path, clock, seal_rows=1000)
    vectors = clustered(1400)
    write(index, 0, vectors[:1000])
    clock.advance(SEAL_QUIET_SECONDS * 2)
    index.wait()
    quiet = [False]
    monkeypatch.setattr(SealingPolicy, "quiet", lambda self: quiet[0])
    for start in (1000, 1150):
        write(index, start, vectors[start : start + 150])
        clock.advance(SEAL_QUIET_SECONDS * 2)
        index.wait()
    assert sorted(segment.live for _, segment in index.sealed) == [150, 150, 1000]
    write(index, 1300, vectors[1300:1400])  # growing, under the seal size
    assert index.sealing.pending  # a check waits for the writes to pause
    quiet[0] = True
    clock.advance(SEAL_QUIET_SECONDS * 2)
    index.wait()
    assert sorted(segment.live for _, segment in index.sealed) == [300, 1000]
    assert index.status().pending == 100
    with index.lock:
        _, found = index.search(vectors[:1], 1400, exact=True)
    assert sorted(found[0].tolist()) == list(range(1400))
    index.close(wait=True)


def test_optimize_stops_a_background_build_at_its_next_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seal still building when optimize() starts stops before its next chunk of rows,
    instead of taking a core from optimize()'s own build until it ends and is dropped
    (100k PyPI rows: optimize() took 80 s beside a seal started after the ingest, and
    the seal ran 20 s past it; 52 s when the seal stops)."""
    monkeypatch.setattr(_sealed, "_ADD_CHUNK", 100)
    clock = FakeClock()
    index = segmented(tmp_path, clock)
    asked: list[bool] = []
    first_chunk, optimizing = threading.Event(), threading.Event()
    real_build = SealedSegment.build

    def watched_build(**arguments: Any) -> SealedSegment:
        cancelled = arguments.get("cancelled")
        if threading.current_thread().name != "latentdb-seal" or cancelled is None:
            return real_build(**arguments)

        def watched() -> bool:
            if not asked:  # the seal's first chunk: hold it there until optimize() runs
                first_chunk.set()
                assert optimizing.wait(30)
            asked.append(cancelled())
            return asked[-1]

        return real_build(**{**arguments, "cancelled": watched})

    monkeypatch.setattr(SealedSegment, "build", watched_build)
    write(index, 0, clustered(600))
    clock.advance(2 * SEAL_QUIET_SECONDS)
    assert first_chunk.wait(30)  # the seal is building
    seal = index._builder
    assert seal is not None
    generation = index._generation
    optimizer = threading.Thread(target=index.optimize)
    optimizer.start()
    for _ in range(3000):  # optimize() has begun: the seal's result is moot
        if index._generation != generation:
            break
        time.sleep(0.01)
    optimizing.set()
    optimizer.join(60)
    seal.join(60)
    assert asked == [True]  # stopped at its first look, not after all 6 chunks
    status = index.status()
    assert (status.segments, status.indexed + status.pending, status.building) == (1, 600, False)
    index.close(wait=True)
