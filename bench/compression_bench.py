"""Compressed hits: the edge's stored gzip/br variants against nginx compressing on the fly, in one run.

    .venv/bin/python bench/compression_bench.py [--duration 5] [--rounds 3]

One 64 KiB CSS file. Loaded by `wrk -t1 -c32` with `Accept-Encoding: gzip` (and br for the edge):
  nginx-gzip   nginx serving the file with `gzip on` (level 6): compresses every response
  nginx-static nginx `gzip_static on` with a precompressed site.css.gz beside it (its best case)
  edge-gzip    one edge worker answering from its stored gzip variant (built once)
  edge-br      the same, brotli variant
  edge-ident   the same object without Accept-Encoding (identity, through the negotiating path)
  edge-media   a 64 KiB .bin in RAM (the worker's fast path), for scale
Prints req/s, response bytes per request and the ratio to nginx-gzip (median of the rounds).
"""

from __future__ import annotations

import argparse
import gzip
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

CSS = "".join(
    f".rule-{i} {{ color: #{i * 2654435761 % 0xFFFFFF:06x}; margin: {i % 17}px; }}\n" for i in range(1800)
)


def wrk(url: str, duration: int, ae: str | None) -> tuple[float, float]:
    """(req/s, bytes transferred per request) from one wrk run."""
    cmd = ["wrk", "-t1", "-c32", f"-d{duration}s", url]
    if ae:
        cmd[1:1] = ["-H", f"Accept-Encoding: {ae}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"requests in [0-9.]+\w+, ([0-9.]+)(\w+) read", out)
    assert m is not None
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m.group(2)]
    return rps, float(m.group(1)) * scale / max(total, 1)


def fetch(url: str, ae: str | None = None) -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Accept-Encoding": ae} if ae else {})
    with urllib.request.urlopen(req) as r:
        return {k.lower(): v for k, v in r.getheaders()}, r.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdnlab-compress-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        base.chmod(0o755)
        www = base / "www"
        www.mkdir()
        (www / "site.css").write_text(CSS)
        (www / "blob.bin").write_bytes(CSS.encode()[: 64 * 1024])
        (www / "static").mkdir()
        (www / "static" / "site.css").write_text(CSS)
        (www / "static" / "site.css.gz").write_bytes(gzip.compress(CSS.encode(), 6, mtime=0))
        origin = stack.enter_context(procs.nginx(base / "origin", www, access_log=False))
        ref = stack.enter_context(
            procs.nginx(
                base / "ref",
                www,
                access_log=False,
                http_extra="gzip on; gzip_comp_level 6; gzip_types text/css; gzip_min_length 256;",
                extra="location /static/ { gzip_static on; }",
            )
        )
        cfg = procs.edge_config([origin.url], access_log=False) + '\n[limits]\nram_object_max = "256K"\n'
        svc = stack.enter_context(procs.edge(base / "edge", cfg))
        edge = f"http://127.0.0.1:{svc.port}"
        for ae in ("gzip", "br", None, "gzip", "br", None):  # stored, variants built, loaded into RAM
            h, body = fetch(f"{edge}/site.css", ae)
            assert h.get("content-encoding") == ae, h
            time.sleep(0.2)
        for _ in range(3):
            fetch(f"{edge}/blob.bin")
            time.sleep(0.2)
        for path in ("/site.css", "/static/site.css"):
            h, body = fetch(f"{ref.url}{path}", "gzip")
            assert h.get("content-encoding") == "gzip" and gzip.decompress(body) == CSS.encode()
        cases = {
            "nginx-gzip": (f"{ref.url}/site.css", "gzip"),
            "nginx-static": (f"{ref.url}/static/site.css", "gzip"),
            "edge-gzip": (f"{edge}/site.css", "gzip"),
            "edge-br": (f"{edge}/site.css", "br"),
            "edge-ident": (f"{edge}/site.css", None),
            "edge-media": (f"{edge}/blob.bin", None),
        }
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in cases}
        for _ in range(args.rounds):
            for name, (url, ae) in cases.items():
                runs[name].append(wrk(url, args.duration, ae))
        ref_rps = statistics.median(r[0] for r in runs["nginx-gzip"])
        print(f"identity {len(CSS)} B; wrk -t1 -c32 -d{args.duration}s, median of {args.rounds} rounds")
        for name, rs in runs.items():
            rps = statistics.median(r[0] for r in rs)
            size = statistics.median(r[1] for r in rs)
            print(f"{name:12s} {rps:9.0f} req/s  {size:8.0f} B/response  {rps / ref_rps:6.2f}x nginx-gzip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
