"""make bench's summary: result files written by each benchmark, collected and rendered."""

from __future__ import annotations

import json

from tools.bench_summary import collect, machine, main, render_markdown, write_result


def test_write_result_is_a_no_op_without_the_directory(monkeypatch):
    monkeypatch.delenv("BENCH_RESULTS_DIR", raising=False)
    assert write_result("intake", {"accepted/s": 1.0}) is None


def test_results_are_collected_in_bench_order_and_rendered(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "r"))
    write_result("notifier", {"p99 ms": 12.5}, {"kafka hop p99 ms": 4.25}, "p99 <= 200 ms")
    write_result("sla_10000", {"open clocks": 10_000, "lateness p99 ms": None})
    write_result("intake", {"accepted/s": 4210.7}, {"bare 202/s": 9120.0}, notes="noisy")
    (tmp_path / "r" / "junk.json").write_text("{not json")
    results = collect(tmp_path / "r")
    assert [r["name"] for r in results] == ["intake", "sla_10000", "notifier"]

    md = render_markdown({"cpu": "Test CPU", "cores": 2}, results, "2026-11-11T000000Z")
    assert "| cores | 2 |" in md
    assert "| accepted/s | 4,211 | measured |" in md
    assert "| bare 202/s | 9,120 | baseline (same run) |" in md
    assert "| kafka hop p99 ms | 4.250 | baseline (same run) |" in md
    assert "| lateness p99 ms | - | measured |" in md
    assert "Target: p99 <= 200 ms" in md
    assert "No result from: router_decide, router_e2e (failed or not run)." in md


def test_machine_describes_cpu_cores_ram_python_os():
    m = machine()
    assert {"cpu", "cores", "ram_gib", "python", "os"} <= set(m)
    assert m["cores"] >= 1 and m["python"].count(".") == 2


def test_main_writes_markdown_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "r"))
    write_result("router_decide", {"cached/s": 59_000.0})
    assert main(["--from", str(tmp_path / "r"), "--out", str(tmp_path / "out")]) == 0
    [md] = (tmp_path / "out").glob("*.md")
    data = json.loads(md.with_suffix(".json").read_text())
    assert data["results"][0]["figures"] == {"cached/s": 59_000.0}
    assert "machine" in data and "## router_decide" in md.read_text()
    assert main(["--from", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
