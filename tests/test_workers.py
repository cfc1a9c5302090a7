"""Work over Ray workers (engine.workers): the same records as one process, a killed
worker replaced, and one process with a message where Ray is missing."""
from __future__ import annotations

import os
import signal
import time

import pytest

from toolprm.bench.harness import RunConfig, StrategySpec, run_sharded
from toolprm.bench.report import load_records
from toolprm.bfcl import load_cases
from toolprm.engine import workers

needs_ray = pytest.mark.skipif(not workers.have_ray(), reason="Ray is not installed (pip install "
                                                               "'toolprm[scale]'); CI installs it")


def _key(records):
    return sorted((r["id"], r["strategy"], r["text"], r["correct"]) for r in records)


@needs_ray
def test_two_ray_workers_write_what_one_process_writes(tmp_path):
    cases = load_cases("simple_python", 3)
    specs = [StrategySpec("greedy")]
    config = RunConfig(max_new_tokens=64)
    one = run_sharded(cases, specs, tmp_path / "one", config, jobs=1, threads=1, progress=False)
    two = run_sharded(cases, specs, tmp_path / "two", config, jobs=2, threads=1, progress=False)
    assert len(one) == len(two) == 3 and _key(one) == _key(two)
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*"))  # the driver wrote the shards
    # resumed: nothing is left to run, so no worker starts and the records stay
    assert _key(run_sharded(cases, specs, tmp_path / "two", config, jobs=2, progress=False)) == _key(two)
    # in one process, the shards' pairs are done too: nothing runs, nothing is written
    assert _key(run_sharded(cases, specs, tmp_path / "two", config, jobs=1, progress=False)) == _key(two)
    assert not (tmp_path / "two" / "cases.jsonl").exists()
    # a run begun in one process goes on over workers: only the new cases run
    more = load_cases("simple_python", 4)
    new = {c.id for c in more} - {c.id for c in cases}
    both = run_sharded(more, specs, tmp_path / "one", config, jobs=2, threads=1, progress=False)
    assert new and len(both) == 3 + len(new) and set(_key(one)) <= set(_key(both))
    assert sorted(r["id"] for d in (tmp_path / "one").glob("shard-*") for r in load_records(d)) == sorted(new)


@needs_ray
def test_a_killed_worker_is_replaced_and_its_task_rerun():
    items = list(range(6))
    with workers.WorkerPool(lambda: "state", 2, 1) as pool:
        pids = pool.pids()
        assert len(set(pids)) == 2
        # at the driver's priority (Ray's default nice 15 starves workers beside any other job)
        assert {os.getpriority(os.PRIO_PROCESS, p) for p in pids} == {os.getpriority(os.PRIO_PROCESS, 0)}
        got, killed = {}, False
        for k, (item, state, pid) in pool.imap_unordered(
                lambda obj, i: (time.sleep(1.0), i, obj, os.getpid())[1:], items):
            got[item] = state
            if not killed:  # the other worker is busy with its first item: kill it there
                os.kill(next(p for p in pids if p != pid), signal.SIGKILL)
                killed = True
    assert got == {i: "state" for i in items}


def test_without_ray_the_jobs_run_in_this_process(monkeypatch, capsys):
    monkeypatch.setattr(workers, "have_ray", lambda: False)
    assert workers.run_jobs(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert "toolprm[scale]" in capsys.readouterr().err
    with workers.WorkerPool(lambda: 10, 2) as pool:
        assert list(pool.imap_unordered(lambda obj, i: obj + i, [1, 2])) == [(0, 11), (0, 12)]
        assert pool.pids() == [os.getpid()]
    assert "one after another in this process" in capsys.readouterr().err
