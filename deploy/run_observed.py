"""`make run-observed`: the embedded local stack (`make run`) plus Debian's Prometheus
scraping the four services, with the rules of deploy/prometheus/rules.yml.

    python deploy/run_observed.py [--prometheus-port 9090] [--no-install]

Starts `python -m shared.localstack run` and `prometheus` as children (data in
.local/prometheus/, log in .local/logs/prometheus.log), prints Prometheus' URL, and on
Ctrl-C stops both (Prometheus first, then the stack, which stops its services, broker and
database in order). When `prometheus` is missing it installs Debian's package if we are
root (without starting the package's own service), or else says how and runs the stack
alone. Ports of the services follow their *_HTTP_PORT variables, as `make run` does."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.localstack import SERVICES, _die_with_parent, _port_open  # noqa: E402

PROM_DIR = ROOT / "deploy" / "prometheus"


def scrape_config(ports: dict[str, int]) -> str:
    """prometheus.local.yml with the services' actual ports and the rules file's path."""
    text = (PROM_DIR / "prometheus.local.yml").read_text()
    for name, _prefix, default in SERVICES:
        text = text.replace(f'"127.0.0.1:{default}"', f'"127.0.0.1:{ports[name]}"')
    return text.replace("  - rules.yml", f"  - {PROM_DIR / 'rules.yml'}")


def ensure_prometheus(install: bool) -> str | None:
    found = shutil.which("prometheus")
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("prometheus not found: installing Debian's 'prometheus' package ...", flush=True)
    r = subprocess.run([str(ROOT / "deploy" / "ensure-promtool.sh")], check=False)
    return shutil.which("prometheus") if r.returncode == 0 else None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_observed")
    parser.add_argument(
        "--prometheus-port", type=int, default=int(os.environ.get("PROMETHEUS_PORT", 9090))
    )
    parser.add_argument("--no-install", action="store_true", help="never install prometheus")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".local" / "prometheus",
        help="Prometheus' data and generated config (default .local/prometheus)",
    )
    args = parser.parse_args(argv)

    ports = {n: int(os.environ.get(f"{p}_HTTP_PORT", d)) for n, p, d in SERVICES}
    data: Path = args.data_dir
    logs = ROOT / ".local" / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    config = data / "prometheus.yml"
    config.write_text(scrape_config(ports))

    prom_bin = ensure_prometheus(install=not args.no_install)
    if prom_bin is None:
        print(
            "prometheus is not installed (Debian: apt-get install prometheus; as root"
            " `make run-observed` does it): running the stack without it.",
            file=sys.stderr,
            flush=True,
        )
    elif _port_open("127.0.0.1", args.prometheus_port):
        print(
            f"port {args.prometheus_port} is taken (another Prometheus?): set PROMETHEUS_PORT",
            file=sys.stderr,
        )
        return 1

    # The children run in their own sessions, so Ctrl-C reaches only us: we stop
    # Prometheus, then send the stack one SIGINT (its own orderly shutdown) and wait.
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack = subprocess.Popen(
        [sys.executable, "-m", "shared.localstack", "run"],
        cwd=ROOT,
        preexec_fn=_die_with_parent,
        start_new_session=True,  # we forward the stop ourselves, once, in order
    )
    prom: subprocess.Popen[bytes] | None = None
    url = f"http://127.0.0.1:{args.prometheus_port}"
    try:
        if prom_bin is not None:
            log = open(logs / "prometheus.log", "ab")  # noqa: SIM115
            prom = subprocess.Popen(
                [
                    prom_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
                    "--storage.tsdb.retention.time=2d",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
            deadline = time.monotonic() + 30
            while not stop and time.monotonic() < deadline and prom.poll() is None:
                if _ready(url):
                    break
                time.sleep(0.2)
            if prom.poll() is not None:
                print("prometheus exited; see .local/logs/prometheus.log", file=sys.stderr)
            else:
                print(
                    f"  prometheus {url}   targets: {url}/targets   alerts: {url}/alerts"
                    "   log: .local/logs/prometheus.log",
                    flush=True,
                )
        while not stop and stack.poll() is None:
            time.sleep(0.3)
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(90)
            except subprocess.TimeoutExpired:
                stack.kill()
                stack.wait()
        if prom is not None:
            print("prometheus stopped.", flush=True)
    return stack.returncode or 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
