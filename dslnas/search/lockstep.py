"""Several searches in one process, taking turns one iteration at a time.

A single NB201 search leaves a big GPU mostly idle: its kernels are small (batch 64, 16-64
channels) and run one after another. Searches that run side by side on their own CUDA streams
let the GPU overlap their kernels. ``Lockstep`` gives each search a thread and a stream and
passes a baton: only the thread holding it runs Python, for one iteration (with CUDA graphs,
one replay), then hands it on. So the host work stays in one ordered sequence (no two threads
in torch.compile, CUDA graph capture or a checkpoint write at once), while the GPU works on
every stream's queued iterations together.

Each search keeps its own random streams: when a thread gives up the baton it saves the global
generators (Python, NumPy, torch's CPU and CUDA generators) and restores them when it gets the
baton back, so a search draws the same numbers as it would alone (the data streams have
generators of their own). On the CPU, where there are no streams, searches run in lockstep
compute exactly what they compute one after another; ``tests/test_lockstep.py`` checks it.
"""
from __future__ import annotations

import random
import threading
from contextlib import nullcontext
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

__all__ = ["Lockstep"]

T = TypeVar("T")
# a task gets the function to call after each of its iterations: it hands the baton on and
# returns when the baton is back
Task = Callable[[Callable[[], None]], T]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    py, npy, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class Lockstep:
    """Run tasks (searches) in turn, one iteration each, each on its own CUDA stream."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._cond = threading.Condition()
        self._order: list[int] = []          # the tasks still running, in turn order
        self._current: int | None = None     # who holds the baton

    def run(self, tasks: Sequence[Task]) -> list:
        """Run every task to its end; returns each one's result, or the exception it raised."""
        cuda = self.device.type == "cuda"
        if cuda:        # what the caller made on the default stream (the data) is ready
            torch.cuda.synchronize(self.device)
        results: list = [None] * len(tasks)
        self._order, self._current = list(range(len(tasks))), 0 if tasks else None
        threads = [threading.Thread(target=self._body, args=(i, task, results, cuda),
                                    name=f"search-{i}", daemon=True)
                   for i, task in enumerate(tasks)]
        for t in threads:
            t.start()
        for t in threads:       # short joins: the main thread stays free to take signals
            while t.is_alive():
                t.join(0.2)
        return results

    def _body(self, i: int, task: Task, results: list, cuda: bool) -> None:
        stream = torch.cuda.Stream(self.device) if cuda else None

        def pass_baton() -> None:
            state = _rng_state(self.device)
            self._hand_on(i)
            self._wait(i)
            _set_rng_state(state, self.device)

        self._wait(i)
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                results[i] = task(pass_baton)
            if stream is not None:
                stream.synchronize()
        except BaseException as e:          # reported to the caller, who decides
            results[i] = e
        finally:
            self._leave(i)

    def _wait(self, i: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._current == i)

    def _hand_on(self, i: int) -> None:
        with self._cond:
            k = self._order.index(i)
            self._current = self._order[(k + 1) % len(self._order)]
            self._cond.notify_all()

    def _leave(self, i: int) -> None:
        with self._cond:
            k = self._order.index(i)
            self._order.remove(i)
            self._current = self._order[k % len(self._order)] if self._order else None
            self._cond.notify_all()
