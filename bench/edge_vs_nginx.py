"""cdnlab's delivery daemon against nginx, side by side, in one run, loaded by wrk.

    .venv/bin/python bench/edge_vs_nginx.py [--duration 8] [--connections 64] [--workers 2]
    (or `make bench`)

Both servers get the same files, the same number of workers, and the same load:
  a) 4 KiB hot objects (200 files, random order)        — small-object request rate
  b) whole 2 MiB objects (20 files, random order)        — bulk throughput, sendfile
  c) 512 KiB ranges of 2 MiB objects (random offsets)    — what video players ask for
  d) cold misses through an upstream (every URL new)     — pull-through: nginx proxy_cache vs cdnlab
Each case alternates nginx and cdnlab for --rounds rounds and reports the medians. Prints req/s,
GB/s and p99 for each, the ratio cdnlab/nginx, and each server's CPU time per request (user +
system of its master and workers, from /proc): the figure that moves least when the machine is
shared, since wrk and the server compete for the same cores. --markdown prints the table as
Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cdnlab.lab import procs

SMALL, SMALL_N = 4096, 200
LARGE, LARGE_N = 2 * 1024 * 1024, 20
RANGE = 512 * 1024
COLD_SIZE = 64 * 1024

LUA_PATHS = """
local paths = {{}}
for i = 0, {n} - 1 do paths[#paths + 1] = string.format("{fmt}", i) end
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16) % 1000)
request = function()
  local p = paths[math.random(#paths)]
  {range}
  return wrk.format("GET", p{headers})
end
"""

LUA_COLD = """
local counter = 0
local tag = tostring({{}}):sub(8)
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/cold/{run}-%s-%d.bin", tag, counter))
end
"""

NGINX_CACHE = """
        location /cold/ {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache cold;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            # With tcp_nopush (set for the static cases), nginx leaves the end of each proxied
            # miss corked on a keep-alive connection until the client's delayed ACK: 44 ms per
            # miss, whatever the load (24 misses/s on one connection instead of ~4400).
            tcp_nopush off;
            add_header Cache-Status $upstream_cache_status;
        }}
"""


@dataclass
class Result:
    rps: float
    bytes_per_s: float
    p99_ms: float
    errors: int
    cpu_us: float = float("nan")  # server CPU (user + system) per request, microseconds


def median(results: list[Result]) -> Result:
    def mid(values: list[float]) -> float:
        return statistics.median(values)

    return Result(
        mid([r.rps for r in results]),
        mid([r.bytes_per_s for r in results]),
        mid([r.p99_ms for r in results]),
        sum(r.errors for r in results),
        mid([r.cpu_us for r in results]),
    )


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # gone meanwhile
    return total


def _unit(value: str, units: dict[str, float]) -> float:
    m = re.match(r"([0-9.]+)([a-zA-Z]+)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * units[m.group(2)]


def wrk(url: str, script: str, duration: int, connections: int, threads: int) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = f.name
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", lua, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(lua)
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    tr = re.search(r"Transfer/sec:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    bps = _unit(tr, {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3})
    p99 = _unit(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1), {"us": 1e-3, "ms": 1.0, "s": 1000.0})  # type: ignore[union-attr]
    err = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(err.group(1)) if err else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return Result(rps, bps, p99, errors)


def make_files(root: Path) -> None:
    for i in range(SMALL_N):
        (root / "small").mkdir(parents=True, exist_ok=True)
        (root / "small" / f"{i}.bin").write_bytes(os.urandom(SMALL))
    for i in range(LARGE_N):
        (root / "large").mkdir(parents=True, exist_ok=True)
        (root / "large" / f"{i}.bin").write_bytes(os.urandom(LARGE))
    (root / "cold.bin").write_bytes(os.urandom(COLD_SIZE))


def warm(port: int) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for kind, n in (("small", SMALL_N), ("large", LARGE_N)):
        for i in range(n):
            for _ in range(2):
                conn.request("GET", f"/{kind}/{i}.bin")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"warming /{kind}/{i}.bin on port {port}: {r.status}")
    conn.close()


def scripts(run_id: str) -> dict[str, str]:
    return {
        "a) 4 KiB hot objects": LUA_PATHS.format(n=SMALL_N, fmt="/small/%d.bin", range="", headers=""),
        "b) whole 2 MiB objects": LUA_PATHS.format(n=LARGE_N, fmt="/large/%d.bin", range="", headers=""),
        "c) 512 KiB ranges of 2 MiB": LUA_PATHS.format(
            n=LARGE_N,
            fmt="/large/%d.bin",
            range=f"local s = math.random(0, 3) * {RANGE}\n"
            f'  local h = {{["Range"] = "bytes=" .. s .. "-" .. (s + {RANGE - 1})}}',
            headers=", h",
        ),
        "d) cold misses via upstream": LUA_COLD.format(run=run_id),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement (default 8)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for both servers (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per case; medians (default 3)")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="cdnlab-bench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        base.chmod(0o755)  # nginx workers run as an unprivileged user
        www = base / "www"
        make_files(www)
        # The upstream for (d): every /cold/* URL is the same 64 KiB file, so every URL is a miss
        # for the caches in front but costs the upstream the same.
        upstream = stack.enter_context(
            procs.nginx(
                base / "upstream",
                www,
                workers=1,
                access_log=False,
                extra="location /cold/ { rewrite ^ /cold.bin break; }",
            )
        )
        nginx_cache = f"proxy_cache_path {base}/nginx-cache levels=1:2 keys_zone=cold:64m max_size=8g;"
        ngx = stack.enter_context(
            procs.nginx(
                base / "nginx",
                www,
                workers=args.workers,
                access_log=False,
                extra=NGINX_CACHE.format(upstream=upstream.url),
                http_extra=nginx_cache,
            )
        )
        # cdnlab gets the same files by pulling them through once (then they are hits).
        edge = stack.enter_context(
            procs.edge(
                base / "cdnlab",
                procs.edge_config([upstream.url], workers=args.workers, capacity="16G", access_log=False),
            )
        )
        warm(ngx.port)
        warm(edge.port)
        rows = []
        for i, (name, script) in enumerate(scripts(str(int(time.time()))).items()):
            if args.only and args.only not in name:
                continue
            # Alternate the two servers for several rounds and keep the median of each figure, so
            # a burst of load elsewhere on the machine hits both alike.
            runs: dict[str, list[Result]] = {"nginx": [], "cdnlab": []}
            for r in range(args.rounds):
                for label, svc in (("nginx", ngx), ("cdnlab", edge)):
                    lua = script.replace("/cold/", f"/cold/{label}{i}r{r}-")
                    cpu = tree_cpu(svc.proc.pid)
                    res = wrk(svc.url, lua, args.duration, args.connections, args.threads)
                    res.cpu_us = (tree_cpu(svc.proc.pid) - cpu) / (res.rps * args.duration) * 1e6
                    runs[label].append(res)
            n, c = median(runs["nginx"]), median(runs["cdnlab"])
            rows.append((name, n, c))
            print(
                f"{name:30} nginx {n.rps:10.0f} req/s {n.bytes_per_s / 1e9:6.2f} GB/s p99 {n.p99_ms:7.2f} ms"
                f" | cdnlab {c.rps:10.0f} req/s {c.bytes_per_s / 1e9:6.2f} GB/s p99 {c.p99_ms:7.2f} ms"
                f" | ratio req/s {c.rps / n.rps:4.2f} p99 {c.p99_ms / n.p99_ms:4.2f}"
                f" | CPU/req nginx {n.cpu_us:.0f} us cdnlab {c.cpu_us:.0f} us"
                f"{'' if not (n.errors or c.errors) else f' | errors nginx {n.errors} cdnlab {c.errors}'}",
                flush=True,
            )
    if args.markdown:
        print(
            f"\nMachine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, median of "
            f"{args.rounds} alternating rounds; {args.workers} workers each; load average "
            f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n"
        )
        print(
            "| case | nginx req/s | nginx GB/s | nginx p99 ms | cdnlab req/s | cdnlab GB/s | cdnlab p99 ms |"
            " ratio req/s | ratio p99 | nginx CPU µs/req | cdnlab CPU µs/req |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, n, c in rows:
            print(
                f"| {name} | {n.rps:.0f} | {n.bytes_per_s / 1e9:.2f} | {n.p99_ms:.2f} | {c.rps:.0f} | "
                f"{c.bytes_per_s / 1e9:.2f} | {c.p99_ms:.2f} | {c.rps / n.rps:.2f} | "
                f"{c.p99_ms / n.p99_ms:.2f} | {n.cpu_us:.0f} | {c.cpu_us:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
