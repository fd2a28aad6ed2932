"""How many threads an embedding call takes: one input runs on the calling thread alone,
a large input on as many threads as there are cores (issue 18), without loading a model."""

from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest

from latentdb.embed._common import torch_threads
from latentdb.embed._onnx import _batch_runner


def _where(batch: list[int]) -> np.ndarray:
    """A stand-in for one ONNX Runtime call: records the thread it ran on."""
    return np.array([[threading.get_ident(), batch[0]]], dtype=np.float64)


def test_one_batch_runs_in_the_calling_thread() -> None:
    with _batch_runner(4, 1) as run_all:
        (result,) = list(run_all(_where, [[7]]))
    assert result[0, 0] == threading.get_ident()
    with _batch_runner(1, 5) as run_all:  # threads=1: every batch in the caller
        results = list(run_all(_where, [[i] for i in range(5)]))
    assert {r[0, 0] for r in results} == {threading.get_ident()}


def test_batches_run_on_at_most_threads_threads_in_order() -> None:
    started = threading.Barrier(2, timeout=10)

    def meet(batch: list[int]) -> np.ndarray:
        if batch[0] < 2:
            started.wait()  # the first two batches really run side by side
        return _where(batch)

    with _batch_runner(2, 6) as run_all:
        results = list(run_all(meet, [[i] for i in range(6)]))
    assert [int(r[0, 1]) for r in results] == list(range(6))  # in the order given
    workers = {r[0, 0] for r in results}
    assert len(workers) == 2 and threading.get_ident() not in workers


class _FakeTorch(types.ModuleType):
    """torch's two thread calls, recorded, so that the test needs no torch."""

    def __init__(self, threads: int) -> None:
        super().__init__("torch")
        self.threads = threads
        self.calls: list[int] = []

    def get_num_threads(self) -> int:
        return self.threads

    def set_num_threads(self, threads: int) -> None:
        self.calls.append(threads)
        self.threads = threads


def test_torch_runs_one_input_on_one_thread_and_restores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeTorch(2)
    monkeypatch.setitem(sys.modules, "torch", fake)
    with torch_threads(1):
        assert fake.threads == 1
    assert fake.threads == 2 and fake.calls == [1, 2]
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("a failed call still restores the threads")
    assert fake.threads == 2
    fake.calls.clear()
    with torch_threads(64):  # a batch keeps every core
        assert fake.threads == 2
    one = _FakeTorch(1)
    monkeypatch.setitem(sys.modules, "torch", one)
    with torch_threads(1):
        pass
    assert fake.calls == [] and one.calls == []
