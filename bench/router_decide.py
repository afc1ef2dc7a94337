"""Benchmark: routing decisions per second of the pure function, on one core.

    make bench-router-decide        (BENCH_SECONDS=3 by default per measurement)

Measures, in the same process and run, pinned to one CPU:
  * baseline: a bare ``rjieba`` cut (no HMM, as the router cuts) of the same texts,
  * ``decide()`` uncached: the text caches off, every message normalised, cut and
    classified afresh, exactly as for a text never seen before (what is still reused: the
    rule lookup and the fallback / family matches per distinct word and pair of words, and
    the decision per classification outcome and context, which repeat across different
    texts; all are warm after the first pass),
  * ``decide()`` on a stream of texts that never repeat, caches on as in the service: each
    message is two evaluation texts joined (621 x 621 distinct pairs), so the cache only
    costs (insertions, evictions) and never helps,
  * ``decide()`` cached: the caches on and the 621 evaluation texts repeated, the best case
    of a chat channel's repeated openers and templated questions,
and prints each figure with its ratio to the baseline. The texts are the evaluation set's
621 messages (Chinese and English) with their context. The machine is shared: figures are
noisy, compare the ratios.

The heap is set up as ``python -m services.router`` sets it up once started: the start-up
heap (rules, dictionaries, models) frozen and the youngest generation collected every
``YOUNG_GC_THRESHOLD`` net allocations (``shared/heap.py``); ``BENCH_GC=python`` leaves
Python's collector as it comes (700 allocations, nothing frozen), to compare.
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

from services.router.app import YOUNG_GC_THRESHOLD
from services.router.domain import decide, default_classifier
from services.router.eval.report import load_rows
from shared.heap import freeze_startup_heap

# Openers and closers customers add around the same request: with them, every message of
# the "never repeat" stream is a text the router has not seen, of about the same length.
OPENERS = [
    "",
    "在吗",
    "你好",
    "亲",
    "客服",
    "喂",
    "hello",
    "hi",
    "您好",
    "请问",
    "麻烦问下",
    "老板",
    "掌柜的",
    "那个",
    "急",
    "在不在",
    "有人吗",
    "打扰一下",
    "嗯",
    "哈喽",
]
CLOSERS = [
    "",
    "谢谢",
    "急",
    "麻烦了",
    "快点",
    "?",
    "哈",
    "thx",
    "谢谢啦",
    "尽快回复",
    "等你回复",
    "好吗",
    "行不行",
    "拜托",
    "!!",
    "哦",
    "呢",
    "在线等",
    "ok?",
    "多谢",
]


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
    if os.environ.get("BENCH_GC", "service") == "python":
        heap = "Python's collector as it comes (BENCH_GC=python)"
    else:
        frozen = freeze_startup_heap(young_threshold=YOUNG_GC_THRESHOLD)
        heap = (
            f"start-up heap frozen ({frozen:,} objects), youngest generation collected every"
            f" {YOUNG_GC_THRESHOLD:,} allocations, as the service"
        )
    chunk = 500
    rng = random.Random(7)

    # Distinct texts, each used once: (1) opener + text + closer, about the length of the
    # evaluation texts; (2) two evaluation texts joined, about twice as long.
    framed_keys = list(itertools.product(range(len(inputs)), range(len(OPENERS) * len(CLOSERS))))
    rng.shuffle(framed_keys)
    joined_keys = list(itertools.permutations(range(len(inputs)), 2))
    rng.shuffle(joined_keys)

    def framed(i: int, k: int) -> str:
        o, c = divmod(k, len(CLOSERS))
        return f"{OPENERS[o]} {texts[i]} {CLOSERS[c]}".strip()

    def joined(i: int, j: int) -> str:
        return f"{texts[i]}，{texts[j]}"

    def runner(
        make: Callable[[int, int], str], keys: list[tuple[int, int]], cut_only: bool
    ) -> Callable[[], int]:
        # Built before the clock runs: only cutting / deciding is measured. A bare cut has
        # no cache, so its baseline may go round the same 50,000 texts.
        limit = 50_000 if cut_only else int(seconds * 60_000) + 2 * chunk
        built = [replace(inputs[i], text=make(i, j)) for i, j in keys[:limit]]
        it = itertools.cycle(built) if cut_only else iter(built)

        def run() -> int:
            batch = list(itertools.islice(it, chunk))
            if cut_only:
                for inp in batch:
                    cutter.cut(inp.text, False)
            else:
                for inp in batch:
                    decide(inp, clf)
            if not batch:
                raise RuntimeError("stream exhausted: raise the limit")
            return len(batch)

        return run

    def baseline() -> int:
        for t in texts:
            cutter.cut(t, False)
        return len(texts)

    def decisions() -> int:
        for inp in inputs:
            decide(inp, clf)
        return len(inputs)

    base = _rate(baseline, seconds)
    clf.set_cache_size(0)
    cold = _rate(decisions, seconds)
    clf.set_cache_size(50_000)
    framed_rate = _rate(runner(framed, framed_keys, False), seconds)
    framed_base = _rate(runner(framed, framed_keys[::-1], True), seconds)
    joined_rate = _rate(runner(joined, joined_keys, False), seconds)
    joined_base = _rate(runner(joined, joined_keys[::-1], True), seconds)
    warm = _rate(decisions, seconds)
    print(f"router decide() benchmark: {len(texts)} evaluation messages, one process {where},")
    print(f"{seconds:g} s per measurement (shared machine: figures are noisy, ratios less so)")
    print(f"heap: {heap}")
    print(f"  baseline bare rjieba cut of the texts          {base:>10,.0f} texts/s      1.00x")
    lines = [
        ("UNCACHED: text caches off, same 621 texts", cold, base),
        ("NEVER REPEAT: opener + text + closer", framed_rate, framed_base),
        ("NEVER REPEAT: two texts joined (2x long)", joined_rate, joined_base),
        ("CACHED: the 621 texts repeated", warm, base),
    ]
    for label, rate, against in lines:
        print(
            f"  decide(), {label:<42} {rate:>10,.0f} decisions/s  {rate / against:.2f}x"
            f" of a bare cut of the same texts ({against:,.0f}/s)"
        )
    print(
        "  (kept across texts in every line: the rule lookup and fallback matches per distinct"
        " word and word pair, and the decision per classification outcome + context)"
    )
    verdict = ", ".join(
        f"{label.split(':')[0].lower()} {'met' if rate >= 20_000 else 'NOT met'}"
        for label, rate, _ in lines[:3]
    )
    print(f"  target >= 20,000 decisions/s on one core: {verdict}")
    from tools.bench_summary import write_result

    write_result(
        "router_decide",
        {f"{label} (decisions/s)": rate for label, rate, _ in lines},
        {f"bare cut for {label} (texts/s)": against for label, _, against in lines},
        ">= 20,000 decisions/s on one core: " + verdict,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
