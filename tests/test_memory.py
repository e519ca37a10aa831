"""Memory does not grow with the number of requests beyond each request's record (issue 16).

A request is an object only while it is in flight (simserve.records.RequestBook); stage busy
time is a running sum (simserve.exactsum); the ITL log folds into a sketch past its bound
(engine.tokens); the timeline is off here. What is left growing is one record per request
(RECORD_BYTES of columns) and the requests frame the Result hands back.
"""
import json
import subprocess
import sys

from simserve.engine import tokens
from simserve.records import RECORD_BYTES

# Poisson arrivals, 64-token prompts, 8-token answers on the bundled default (8B, one H100): short
# requests, so 200k of them simulate in ~20 s of CPU
POISSON = ["workload.trace=null", "workload.arrivals.process=poisson", "workload.arrivals.rate=50",
           "workload.lengths.isl=64", "workload.lengths.osl=8", "engine.timeline=false"]

_PEAK = """
import json, resource, sys
from simserve.simulation import simulate
n = int(sys.argv[1])
simulate(None, overrides=sys.argv[2:] + ["workload.num_requests=200"])     # imports and caches warmed
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = simulate(None, overrides=sys.argv[2:] + [f"workload.num_requests={n}"])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": after, "done": result.summary["num_completed"]}))
"""


def _peak_rss(n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(n), *POISSON], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_of_200k_requests_is_within_1_5x_of_20k():
    """The issue's check, as peak RSS of a fresh process (resource.getrusage). Both peaks include
    the interpreter and its libraries (~90 MB), so the growth is checked on its own too: 180k more
    requests may add at most 512 bytes each, room for their record (RECORD_BYTES), the frame's
    derived columns (7 x 8 bytes) and the summary's temporaries (measured: ~185 bytes); a live
    Request object with its rows took ~10 KB before issue 16."""
    small, large = _peak_rss(20_000), _peak_rss(200_000)
    assert small["done"] == 20_000 and large["done"] == 200_000
    assert large["peak_kb"] <= 1.5 * small["peak_kb"], (small, large)
    grown = (large["peak_kb"] - small["peak_kb"]) * 1024 / 180_000
    assert grown <= 512, f"{grown:.0f} bytes per request"


def test_simulation_state_grows_by_the_records_only(monkeypatch):
    """Traced memory (tracemalloc) held when the run ends, before the summary is built: from 1,000
    to 10,000 requests it may grow by the records' RECORD_BYTES each and a 2x allowance for the
    numpy headers and the allocator; the folded log (64 KB bound) and the stage sums do not grow."""
    import tracemalloc

    from simserve.world import build_world

    monkeypatch.setattr(tokens, "EXACT_MAX_BYTES", 65536)
    held = {}
    for n in (1000, 10_000):
        tracemalloc.start()
        world = build_world(None, POISSON + [f"workload.num_requests={n}"]).run(False)
        held[n] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert world.requests.recorded == n
        del world
    per_request = (held[10_000] - held[1000]) / 9000
    assert per_request <= 2 * RECORD_BYTES, f"{per_request:.0f} bytes per request"


def test_requests_leave_no_object_behind():
    """No Request outlives its run's end: the book holds columns, the replicas hold nothing."""
    import gc

    from simserve.request import Request
    from simserve.world import build_world

    world = build_world(None, POISSON + ["workload.num_requests=300"]).run(False)
    gc.collect()
    assert world.requests.recorded == 300
    assert not [o for o in gc.get_objects() if isinstance(o, Request)]
