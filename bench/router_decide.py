"""Benchmark: routing decisions per second of the pure function, on one core.

    make bench-router-decide        (BENCH_SECONDS=3 by default per measurement)

Measures, in the same process and run, pinned to one CPU:
  * baseline: a bare ``rjieba`` cut (no HMM, as the router cuts) of the same texts,
  * ``decide()`` uncached: the caches off, every message normalised, cut and classified
    afresh, exactly as for a text never seen before,
  * ``decide()`` on a stream of texts that never repeat, caches on as in the service: each
    message is two evaluation texts joined (621 x 621 distinct pairs), so the cache only
    costs (insertions, evictions) and never helps,
  * ``decide()`` cached: the caches on and the 621 evaluation texts repeated, the best case
    of a chat channel's repeated openers and templated questions,
and prints each figure with its ratio to the baseline. The texts are the evaluation set's
621 messages (Chinese and English) with their context. The machine is shared: figures are
noisy, compare the ratios.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import rjieba

from services.router.domain import DecisionInput, decide, default_classifier
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
    clf = default_classifier()
    cutter = rjieba.Jieba()

    # Distinct texts: every ordered pair of evaluation texts, shuffled, consumed once.
    pairs = list(itertools.permutations(range(len(inputs)), 2))
    random.Random(7).shuffle(pairs)
    fresh = iter(pairs)
    chunk = 500

    def baseline() -> int:
        for t in texts:
            cutter.cut(t, False)
        return len(texts)

    def decisions() -> int:
        for inp in inputs:
            decide(inp, clf)
        return len(inputs)

    def unique() -> int:
        batch: list[DecisionInput] = []
        for i, j in itertools.islice(fresh, chunk):
            a = inputs[i]
            batch.append(replace(a, text=f"{a.text}，{inputs[j].text}"))
        for inp in batch:
            decide(inp, clf)
        return len(batch)

    base = _rate(baseline, seconds)
    clf.set_cache_size(0)
    cold = _rate(decisions, seconds)
    clf.set_cache_size(50_000)
    new = _rate(unique, seconds)
    # the same joined texts through a bare cut: the baseline of that stream
    fresh = iter(pairs)

    def joined_base() -> int:
        n = 0
        for i, j in itertools.islice(fresh, chunk):
            cutter.cut(f"{texts[i]}，{texts[j]}", False)
            n += 1
        return n

    new_base = _rate(joined_base, seconds)
    warm = _rate(decisions, seconds)
    print(f"router decide() benchmark: {len(texts)} evaluation messages, one process {where},")
    print(f"{seconds:g} s per measurement (shared machine: figures are noisy, ratios less so)")
    print(f"  baseline bare rjieba cut                  {base:>10,.0f} texts/s      1.00x")
    print(
        f"  decide(), UNCACHED (caches off)           {cold:>10,.0f} decisions/s  "
        f"{cold / base:.2f}x"
    )
    print(
        f"  decide(), texts never repeat (2 joined)   {new:>10,.0f} decisions/s  "
        f"{new / new_base:.2f}x of a bare cut of those texts ({new_base:,.0f}/s)"
    )
    print(
        f"  decide(), CACHED (texts repeat)           {warm:>10,.0f} decisions/s  "
        f"{warm / base:.2f}x"
    )
    print(
        f"  target >= 20,000 decisions/s on one core: uncached "
        f"{'met' if cold >= 20_000 else 'NOT met'}, never-repeating "
        f"{'met' if new >= 20_000 else 'NOT met'}, cached {'met' if warm >= 20_000 else 'NOT met'}"
    )
    from tools.bench_summary import write_result

    write_result(
        "router_decide",
        {"uncached decisions/s": cold, "never-repeating decisions/s": new, "cached/s": warm},
        {"bare rjieba cut texts/s": base, "bare cut of joined texts/s": new_base},
        ">= 20,000 decisions/s on one core",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
