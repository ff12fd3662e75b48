"""What the edge's DDoS caps cost and how they hold, loaded by wrk.

    .venv/bin/python bench/edge_limits.py [--duration 5] [--rounds 3]

One worker, `wrk -t1 -c32` on one 4 KiB object held in RAM (the fast path), three configs:
  off      no caps
  limited  conn and rate caps on, set so high that nothing is refused (the per-request cost)
  capped   rate_per_client 1000/s, burst 100: all of wrk's connections are one client address,
           so everything over 1000/s is answered 429 (how well the cap holds, and what a refusal costs)
Prints req/s, the worker's CPU per answered request (user + system from /proc/PID/stat), and for
`capped` the 200s and 429s counted by wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cdnlab.lab import procs

CONFIGS = {
    "off": "",
    "limited": "conn_per_client = 100000\nrate_per_client = 10000000.0\nrate_burst = 10000000\n",
    "capped": "rate_per_client = 1000.0\nrate_burst = 100\n",
}
TICK = os.sysconf("SC_CLK_TCK")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk(url: str, duration: int) -> tuple[float, int, int]:
    """(req/s, total requests, non-2xx) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{duration}s", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, total, int(bad.group(1)) if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdnlab-limits-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        base.chmod(0o755)
        www = base / "www"
        www.mkdir()
        (www / "small.bin").write_bytes(os.urandom(4096))
        upstream = stack.enter_context(procs.nginx(base / "upstream", www, access_log=False))
        edges = {}
        for name, limits in CONFIGS.items():
            cfg = procs.edge_config([upstream.url], access_log=False) + f"\n[limits]\n{limits}"
            svc = stack.enter_context(procs.edge(base / name, cfg))
            url = f"http://127.0.0.1:{svc.port}/small.bin"
            for _ in range(3):  # stored, then loaded into the worker's RAM
                urllib.request.urlopen(url).read()
                time.sleep(0.2)
            edges[name] = (url, worker_pid(svc.proc.pid))
        results: dict[str, list[tuple[float, float, int, int]]] = {n: [] for n in CONFIGS}
        for _ in range(args.rounds):
            for name, (url, pid) in edges.items():
                before = cpu(pid)
                rps, total, bad = wrk(url, args.duration)
                results[name].append((rps, (cpu(pid) - before) / max(total, 1) * 1e6, total - bad, bad))
        for name, runs in results.items():
            rps = statistics.median(r[0] for r in runs)
            us = statistics.median(r[1] for r in runs)
            ok = statistics.median(r[2] for r in runs)
            refused = statistics.median(r[3] for r in runs)
            print(
                f"{name:8s} {rps:9.0f} req/s  {us:5.1f} us CPU/request  "
                f"200s {ok:.0f} ({ok / args.duration:.0f}/s)  refused {refused:.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
