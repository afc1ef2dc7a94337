"""Benchmark: routing decisions per second of the pure function, on one core.

    make bench-router-decide        (BENCH_SECONDS=3 by default per measurement)

Measures, in the same process and run, pinned to one CPU:
  * baseline: a bare ``jieba.lcut`` of the same texts (jieba's default tokenizer, HMM on),
  * ``decide()`` cold: the tokenisation cache off, every message cut by jieba again,
  * ``decide()`` warm: the cache on, as in the service (repeated openers and templated
    questions are cut once; order numbers are stripped before the cache key),
and prints each figure with its ratio to the baseline. The texts are the evaluation set's
621 messages (Chinese and English) with their context. The machine is shared: figures are
noisy, compare the ratios.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import jieba

from services.router.domain import decide, default_classifier
from services.router.eval.report import load_rows


def _rate(fn: Callable[[], int], seconds: float) -> float:
    fn()  # warm-up pass
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "3"))
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        where = f"pinned to CPU {cpu}"
    else:  # pragma: no cover
        where = "not pinned"
    rows = load_rows()
    inputs = [r.decision_input() for r in rows]
    texts = [r.text for r in rows]
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    clf = default_classifier()

    def baseline() -> int:
        for t in texts:
            jieba.lcut(t)
        return len(texts)

    def decisions() -> int:
        for inp in inputs:
            decide(inp, clf)
        return len(inputs)

    base = _rate(baseline, seconds)
    clf.set_cache_size(0)
    cold = _rate(decisions, seconds)
    clf.set_cache_size(50_000)
    warm = _rate(decisions, seconds)
    print(f"router decide() benchmark: {len(texts)} evaluation messages, one process {where},")
    print(f"{seconds:g} s per measurement (shared machine: figures are noisy, ratios less so)")
    print(f"  baseline bare jieba.lcut          {base:>10,.0f} texts/s      1.00x")
    print(f"  decide(), caches off              {cold:>10,.0f} decisions/s  {cold / base:.2f}x")
    print(f"  decide(), caches on (as served)   {warm:>10,.0f} decisions/s  {warm / base:.2f}x")
    for repeat in (0.5, 0.8):
        mixed = 1 / (repeat / warm + (1 - repeat) / cold)
        print(f"  computed for a stream with {repeat:.0%} repeated texts: {mixed:,.0f} decisions/s")
    print(
        f"  target >= 20,000 decisions/s: {'met' if warm >= 20_000 else 'NOT met'} (cache on),"
        f" {'met' if cold >= 20_000 else 'not met'} (cache off)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
