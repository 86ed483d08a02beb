"""The worker process's garbage-collector policy (runtime/worker.py tune_gc, IdleCollector)."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import gc; from runtime.worker import tune_gc; before = gc.get_threshold(); n = tune_gc(); "
         "print(before[2], gc.get_threshold()[2], n, gc.get_freeze_count())")


def _probe(env_value: str | None) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "SGLC_GC_FULL_EVERY"}
    if env_value is not None:
        env["SGLC_GC_FULL_EVERY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("value,expect", [(None, 1000), ("", 1000), ("250", 250), ("0", None)])
def test_tune_gc_freezes_and_puts_off_full_collections(value, expect):
    """In a fresh interpreter (the policy is process-wide): start-up objects frozen, the oldest generation's
    threshold raised (SGLC_GC_FULL_EVERY; 0 keeps Python's)."""
    python_default, after, frozen, still_frozen = _probe(value)
    assert after == (python_default if expect is None else expect)
    assert frozen > 1000 and still_frozen == frozen


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_bad_full_every_is_refused(value):
    from runtime.envs import Env, gc_full_every
    from runtime.errors import EngineError

    with pytest.raises(EngineError, match="SGLC_GC_FULL_EVERY=.*whole number"):
        gc_full_every(Env(gc_full_every=value))


def test_idle_collector_collects_when_work_runs_out(monkeypatch):
    from runtime.worker import IdleCollector

    calls, now = [], [0.0]
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    c = IdleCollector(min_interval=1.0, clock=lambda: now[0])
    for t, busy in ((0.0, False), (0.1, True), (0.2, True), (0.3, False), (0.4, False), (0.5, True), (2.0, False)):
        now[0] = t
        c.tick(busy)
    assert c.collections == 2 and len(calls) == 2   # busy -> idle at 0.3 and at 2.0
    for t, busy in ((2.1, True), (2.5, False), (3.2, True), (3.4, False)):   # idle again 0.5 s later: skipped
        now[0] = t
        c.tick(busy)
    assert c.collections == 3 and c.last == 3.4
