"""Work split over worker processes, on this machine or a cluster, through Ray (the
optional ``scale`` extra: ``pip install 'toolprm[scale]'``).

* ``run_jobs``: whole jobs, one task each (``train data --jobs``, ``bench canonical
  --jobs``).
* ``WorkerPool``: one object per worker, made once there (a loaded policy), and
  chunks of work handed to whichever worker is free (``bench bfcl`` and ``bench
  scaling --jobs``).

``ray.init()`` starts a local cluster unless ``address`` names one to join ("auto",
or "host:port"). A worker that dies is started again (its object made anew) and its
task retried, ``RETRIES`` times. Without Ray the work runs in this process, one job
after another, with a message that says so.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

SCALE_HINT = "pip install 'toolprm[scale]'"
#: How often a dead worker is started again and its task retried.
RETRIES = 2


def have_ray() -> bool:
    return importlib.util.find_spec("ray") is not None


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """torch intra-op threads for each of ``jobs`` processes: ``threads`` or a share of the cores."""
    return threads or max(1, (os.cpu_count() or 1) // jobs)


def _in_one_process(jobs: int) -> None:
    print(f"toolprm: {jobs} jobs run in worker processes through Ray, which is not installed "
          f"({SCALE_HINT}); running them one after another in this process", file=sys.stderr)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


@contextmanager
def _ray(address: str | None, cpus: int):
    """Ray, started here (a local cluster, or joining ``address``) unless it already
    runs in this process; stopped again on leaving if it was started here. A local
    cluster counts at least ``cpus`` CPUs, so that more workers than cores share
    them rather than wait for ever."""
    import ray
    started = not ray.is_initialized()
    if started:
        if not address:  # Ray lowers its workers' priority (nice 15): beside any other job they starved
            os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address=address, include_dashboard=False, configure_logging=False,
                 num_cpus=None if address else max(os.cpu_count() or 1, cpus))
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _call(fn: Callable, threads: int | None, args: tuple) -> Any:
    _set_threads(threads)
    return fn(*args)


def run_jobs(fn: Callable, jobs: Sequence[tuple], threads: int | None = None,
             address: str | None = None) -> list:
    """``fn(*args)`` for each args tuple of ``jobs``, each a Ray task with ``threads``
    torch threads (and as many CPUs reserved); the results in order. ``fn`` must be a
    module-level function (the workers import it)."""
    if len(jobs) <= 1 or not have_ray():
        if len(jobs) > 1:
            _in_one_process(len(jobs))
        return [fn(*args) for args in jobs]
    with _ray(address, len(jobs) * (threads or 1)) as ray:
        task = ray.remote(num_cpus=threads or 1, max_retries=RETRIES)(_call)
        return ray.get([task.remote(fn, threads, args) for args in jobs])


class _Holder:
    """A worker's state: the object ``make()`` returned, made once in the worker."""

    def __init__(self, make: Callable[[], Any], threads: int | None):
        _set_threads(threads)
        self.obj = make()

    def call(self, fn: Callable, item: Any) -> Any:
        return fn(self.obj, item)

    def pid(self) -> int:
        return os.getpid()


class WorkerPool:
    """``jobs`` workers, each holding the object ``make()`` returns (made in the
    worker, once); ``imap_unordered(fn, items)`` runs ``fn(obj, item)`` on whichever
    worker is free and yields ``(worker index, result)`` as each finishes. With one
    job, or without Ray, everything runs in this process as worker 0. ``make`` and
    ``fn`` must pickle (module-level functions, ``functools.partial`` of them)."""

    def __init__(self, make: Callable[[], Any], jobs: int, threads: int | None = None,
                 address: str | None = None):
        self.make, self.jobs, self.threads, self.address = make, jobs, threads, address
        self.actors: list = []
        self._local = None
        self._session = None

    def __enter__(self) -> "WorkerPool":
        if self.jobs > 1 and have_ray():
            self._session = _ray(self.address, self.jobs * (self.threads or 1))
            self.ray = self._session.__enter__()
            actor = self.ray.remote(num_cpus=self.threads or 1, max_restarts=RETRIES,
                                    max_task_retries=RETRIES)(_Holder)
            self.actors = [actor.remote(self.make, self.threads) for _ in range(self.jobs)]
        elif self.jobs > 1:
            _in_one_process(self.jobs)
        return self

    def __exit__(self, *exc) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self._session is not None:
            self._session.__exit__(*exc)
            self._session = None

    def pids(self) -> list[int]:
        """The workers' process ids (this process's when it runs everything)."""
        if not self.actors:
            return [os.getpid()]
        return self.ray.get([a.pid.remote() for a in self.actors])

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[tuple[int, Any]]:
        queue = list(items)
        if not self.actors:
            for item in queue:
                if self._local is None:
                    self._local = _Holder(self.make, None)
                yield 0, self._local.call(fn, item)
            return
        free, pending = list(range(len(self.actors)))[::-1], {}
        while queue or pending:
            while free and queue:
                k = free.pop()
                pending[self.actors[k].call.remote(fn, queue.pop(0))] = k
            done, _ = self.ray.wait(list(pending), num_returns=1)
            k = pending.pop(done[0])
            free.append(k)
            yield k, self.ray.get(done[0])


__all__ = ["run_jobs", "WorkerPool", "threads_per_job", "have_ray", "SCALE_HINT", "RETRIES"]
