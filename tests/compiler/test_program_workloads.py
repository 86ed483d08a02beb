"""The benchmark's fork workloads (``bench/program_workloads.py``) make the embedded model write text in their
gens. Until session 12 their prompts ended in a colon, after which the embedded model's first token is the gens'
stop (a newline): every fork gen came back empty, and ``bench_programs.py`` measured the programs' prompts only."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def recorder(embedded_engine):
    sys.path.insert(0, str(BENCH))
    from bench_programs import Recorder

    return Recorder(embedded_engine)


@pytest.mark.parametrize("name,gens", [("skeleton-of-thought", 5), ("tree-of-thought", 14), ("long-context", 5)])
def test_fork_workload_gens_write_text(recorder, name: str, gens: int) -> None:
    from program_workloads import workloads

    import sglc as sgl

    wl = next(w for w in workloads(1, use_schema=True) if w.name.startswith(name))
    fn, args = wl.items[0]
    recorder.reset()
    fn.run(**args, temperature=0, backend=sgl.EngineBackend(recorder))
    outs = [out for _, out in recorder.outputs]
    assert len(outs) == gens
    # output ids include the stop token: one id is an empty gen (all of them before the fix; some slack for a
    # greedy tie that another CPU breaks the other way)
    written = [out for out in outs if len(out) > 1]
    assert len(written) >= 0.75 * len(outs), [len(o) for o in outs]
    assert sum(len(o) for o in outs) / len(outs) >= 3
