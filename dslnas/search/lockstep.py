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
compute exactly what they compute one after another; ``tests/test_lockstep.py`` checks it. On a
GPU they differ from a lone run only as two lone runs do (cuDNN's autotuned kernels).

``serial``: the GPU runs one stream's work after the other's, each turn waiting for the previous
holder's queued work. Needed where a CUDA graph samples random numbers (DrNAS' Dirichlet):
every replay writes the generator's seed and offset into buffers that all graphs of the process
share, and a replay on another stream could overwrite them before this one's kernels read them.

A second Ctrl-C (``KeyboardInterrupt`` in the main thread) aborts: each search raises
``Aborted`` at its next turn, so none goes on writing after the command has given up.
"""
from __future__ import annotations

import gc
import threading
from contextlib import nullcontext
from typing import Callable, Sequence, TypeVar

import torch

from .checkpoint import rng_state, set_rng_state

__all__ = ["Lockstep", "Aborted"]

T = TypeVar("T")
# a task gets the function to call after each of its iterations: it hands the baton on and
# returns when the baton is back
Task = Callable[[Callable[[], None]], T]


class Aborted(Exception):
    """Raised in a task at its turn after ``Lockstep.run`` was interrupted."""


class Lockstep:
    """Run tasks (searches) in turn, one iteration each, each on its own CUDA stream."""

    def __init__(self, device: str | torch.device = "cpu", serial: bool = False):
        self.device = torch.device(device)
        self.serial = serial
        self._cond = threading.Condition()
        self._order: list[int] = []          # the tasks still running, in turn order
        self._current: int | None = None     # who holds the baton
        self._aborted = False
        self._last_work = None               # serial: an event after the last holder's work

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
        try:
            for t in threads:       # short joins: the main thread stays free to take signals
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.abort()
            for t in threads:       # the holder finishes its iteration, then every task stops
                t.join(60)
            raise
        return results

    def abort(self) -> None:
        """Every task raises ``Aborted`` at its next turn."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def _body(self, i: int, task: Task, results: list, cuda: bool) -> None:
        stream = None

        def pass_baton() -> None:
            state = rng_state()
            self._mark_work(stream)
            self._hand_on(i)
            self._wait(i, stream)
            set_rng_state(state)

        try:
            stream = torch.cuda.Stream(self.device) if cuda else None
            self._wait(i, stream)
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                results[i] = task(pass_baton)
            if stream is not None:
                stream.synchronize()
        except BaseException as e:          # reported to the caller, who decides
            results[i] = e
        finally:
            if self._current == i:      # (not so when aborted while waiting)
                # free this search's CUDA graphs now, while no other thread can be capturing
                # one (a graph destroyed during another's capture would break that capture)
                gc.collect()
                self._mark_work(stream)
            self._leave(i)

    def _mark_work(self, stream) -> None:
        if self.serial and stream is not None:
            self._last_work = torch.cuda.Event()
            self._last_work.record(stream)

    def _wait(self, i: int, stream=None) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._current == i or self._aborted)
            if self._aborted:
                raise Aborted("stopped at once (a second interrupt)")
        if self.serial and stream is not None and self._last_work is not None:
            stream.wait_event(self._last_work)

    def _hand_on(self, i: int) -> None:
        with self._cond:
            k = self._order.index(i)
            self._current = self._order[(k + 1) % len(self._order)]
            self._cond.notify_all()

    def _leave(self, i: int) -> None:
        with self._cond:
            k = self._order.index(i)
            self._order.remove(i)
            if self._current == i:      # hand the baton on; a task aborted while waiting has none
                self._current = self._order[k % len(self._order)] if self._order else None
            self._cond.notify_all()
