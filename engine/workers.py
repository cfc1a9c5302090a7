"""Worker processes for jobs split over cores (`bench scaling --jobs`, `train data --jobs`)."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any, Callable, Sequence


def _start(threads: int | None) -> None:
    # A worker stops when its parent is killed, instead of running on orphaned.
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()
    if threads:
        import torch
        torch.set_num_threads(threads)


def _call(fn: Callable, threads: int | None, args: tuple) -> Any:
    _start(threads)
    return fn(*args)


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """torch intra-op threads for each of ``jobs`` processes: ``threads`` or a share of the cores."""
    return threads or max(1, (os.cpu_count() or 1) // jobs)


def run_jobs(fn: Callable, jobs: Sequence[tuple], threads: int | None = None) -> list:
    """``fn(*args)`` for each args tuple of ``jobs``, each in its own spawned process
    (torch and fork do not mix) with ``threads`` torch threads; the results in order."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(jobs)) as pool:
        results = pool.starmap(_call, [(fn, threads, args) for args in jobs])
        # Let the workers exit on their own (the context manager would terminate them,
        # and their semaphores would be reported as leaked).
        pool.close()
        pool.join()
    return results
