"""bench/pages.py's verdict: how many runs with two pages open fall inside the spread of the runs with
none (the web page issue's test), from each run's frame p99."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import pages  # noqa: E402  (bench/pages.py)


def test_two_pages_runs_are_counted_inside_the_spread_of_none_open():
    none = [{"pages": 0, "frame_ms_p99": v, "underruns": 0} for v in (1.4, 2.6, 1.9)]
    two = [{"pages": 2, "frame_ms_p99": v, "underruns": u} for v, u in ((1.4, 0), (2.2, 1), (2.61, 0), (1.3, 0))]
    summary = pages.summarise(none + two)
    assert summary["2_pages"]["inside_spread_of_none"] == 2  # 1.4 and 2.2: the ends count, 2.61 and 1.3 do not
    assert summary["0_pages"]["p99_median_ms"] == 1.9 and summary["0_pages"]["p99_spread_ms"] == 1.2
    assert summary["2_pages"]["underruns"] == [0, 1, 0, 0]
