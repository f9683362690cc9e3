"""The demo's steps, one after another or side by side in worker processes (`demo.jobs`), with the time so far and
an estimate of the time left printed before each."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import torch

from ..training.loop import TrainingInterrupted


class Progress:
    """Prints each step with the time so far and an estimate of the time left. The estimate comes from the steps
    that did work in this invocation: a step already done on entry (a resumed demo) costs nothing and says so."""

    def __init__(self, costs: list[float]):
        self.costs, self.done, self.t0 = costs, 0, time.perf_counter()
        self.worked_cost, self.worked_s = 0.0, 0.0  # cost and wall time of the steps that did work
        self.held = 0  # steps that must still finish before an estimate is given

    def hold_estimate(self, steps: int) -> None:
        """Side by side: the first step to finish ran beside others that are part done, so the wall time per cost
        unit it gives is up to `steps` times too long; estimate only once that many have finished."""
        self.held = steps

    def eta(self) -> str:
        if not self.worked_cost or self.held > 0:
            return ""
        return f", ~{self.worked_s / self.worked_cost * sum(self.costs[self.done:]) / 60:.1f} min left"

    def start(self, name: str) -> None:
        print(f"[{self.done + 1}/{len(self.costs)}] {name} ({(time.perf_counter() - self.t0) / 60:.1f} min so far"
              f"{self.eta()})", flush=True)

    def finish(self, wall_s: float, already_done: bool = False, report: str | None = None) -> None:
        """One step ended; `wall_s` of the demo's wall time went to it (for steps side by side: since the previous
        one ended). `report`: a line to print (side by side, where `start` cannot say when a step starts)."""
        if already_done:
            self.costs[self.done] = 0.0
        else:
            self.worked_cost, self.worked_s = self.worked_cost + self.costs[self.done], self.worked_s + wall_s
            self.held -= 1
        self.done += 1
        if report is not None:
            print(f"[{self.done}/{len(self.costs)}] {report} ({(time.perf_counter() - self.t0) / 60:.1f} min so far"
                  f"{self.eta()})", flush=True)


# --------------------------------------------------------------------------------------------------
# Steps run one after another, or side by side in worker processes (--jobs)


@dataclass
class Task:
    name: str
    fn: Callable  # a module-level function (it is sent to a worker process by name)
    args: tuple
    already_done: bool  # finished by an earlier invocation: the call returns at once


def run_tasks(tasks: list[Task], jobs: int, progress: Progress) -> list:
    """Each task's result, in order. jobs > 1: side by side in that many spawned processes, each with its share of
    the CPU threads (a tiny model's step uses two threads poorly; on a GPU, one process leaves it mostly idle).
    Every task is a pure function of its arguments (seeded), so the results do not depend on `jobs`."""
    if jobs <= 1 or sum(not t.already_done for t in tasks) <= 1:
        results = []
        for t in tasks:
            progress.start(t.name)
            result, took = timed(t.fn, *t.args)
            results.append(result)
            progress.finish(took, t.already_done)
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"{len(tasks)} steps side by side in {jobs} processes of {threads} thread(s)", flush=True)
    progress.hold_estimate(min(jobs, sum(not t.already_done for t in tasks)))
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(worker_step, t.fn, *t.args): t for t in tasks}
        last = time.perf_counter()
        for future in as_completed(futures):
            _, took = future.result()  # a failed or interrupted step stops the demo here
            t, now = futures[future], time.perf_counter()
            progress.finish(now - last, t.already_done,
                            f"{t.name}: {'already done' if t.already_done else f'{took / 60:.1f} min'}")
            last = last if t.already_done else now
        return [f.result()[0] for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def timed(fn: Callable, *args) -> tuple[object, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


_WORKER_INTERRUPTED = False  # in a worker process: one of its steps was interrupted (Ctrl-C, SIGTERM, a budget)


def worker_step(fn: Callable, *args) -> tuple[object, float]:
    """`timed` in a worker process. Once a step there was interrupted, no later step starts: the pool hands a free
    worker the next queued step before the main process can cancel it, so without this an interrupted demo went
    on training the queued arms."""
    global _WORKER_INTERRUPTED
    if _WORKER_INTERRUPTED:
        raise TrainingInterrupted("not started: the demo was interrupted; run the same command again to resume")
    try:
        return timed(fn, *args)
    except (KeyboardInterrupt, TrainingInterrupted):
        _WORKER_INTERRUPTED = True
        raise
