"""bench/trace_gaps.py: GPU-idle gaps of a profiler trace charged to the innermost host range open in them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from trace_gaps import analyze, charge, load


def _x(cat, name, ts, dur):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}


def test_gaps_charged_to_innermost_range(tmp_path):
    events = [
        # GPU: busy 0-100, idle 100-160, busy 160-200 (two overlapping kernels), idle 200-205 (below min gap), 205-300
        _x("kernel", "k1", 0, 100), _x("kernel", "k2", 160, 30), _x("gpu_memcpy", "h2d", 170, 30),
        _x("kernel", "k3", 205, 95),
        # host: a step 90-170 holding build 95-130 (holding sample 120-150, ends past build: clipped by order)
        _x("user_annotation", "sglc.step", 90, 80), _x("user_annotation", "sglc._build", 95, 35),
        _x("user_annotation", "sglc.sample", 120, 30),
        _x("user_annotation", "not.ours", 100, 60),
        _x("cuda_runtime", "cudaEventSynchronize", 140, 10), _x("cuda_runtime", "cudaLaunchKernel", 250, 5),
        {"ph": "i", "name": "instant", "ts": 1},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    r = analyze(load(str(path)), min_gap=20)
    assert r["gaps"] == 1 and r["gap_us"] == 60
    assert r["busy_us"] == 100 + 40 + 95 and r["window_us"] == 300
    # 100-120 build, 120-150 sample (opened last), 150-160 step
    assert r["charged"] == {"sglc._build": 20, "sglc.sample": 30, "sglc.step": 10}
    assert r["runtime_in_gaps"] == {"cudaEventSynchronize": 10}
    assert r["steps"] == 1 and r["range_us_per_step"]["sglc.step"] == 80


def test_charge_outside_any_range():
    assert charge([(0, 10), (20, 30)], [(5, 25, "sglc.a")]) == {"(no range)": 10, "sglc.a": 10}
