"""TLS on the client port: cdnlab against nginx with the same certificate, in one run, loaded by wrk.

    .venv/bin/python bench/edge_tls.py [--duration 8] [--connections 64] [--workers 2] [--markdown]

Both servers get the same files, the same P-256 certificate, TLS 1.3, the same number of workers,
and the same load over https (nginx: ssl_session_cache shared, sendfile on, which TLS ignores
without kTLS; cdnlab: its TLS listener):
  a) 4 KiB hot objects, keep-alive                     — request rate through the cipher
  b) whole 2 MiB objects, keep-alive                   — bulk throughput (no sendfile under TLS)
  c) 4 KiB, new connection per request (Connection: close) — full-handshake rate (wrk never resumes)
Each case alternates nginx and cdnlab for --rounds rounds and reports the medians and the ratio
cdnlab/nginx. The plain-HTTP columns are bench/edge_vs_nginx.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from cdnlab.lab import procs  # noqa: E402
from edge_vs_nginx import LARGE_N, LUA_PATHS, SMALL_N, Result, make_files, median, warm, wrk  # noqa: E402

NGINX_TLS = """
    server {{
        listen 127.0.0.1:{port} ssl reuseport backlog=4096;
        root {root};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_session_cache shared:SSL:16m;
        ssl_session_tickets on;
    }}
"""

EDGE_TLS = """
[tls]
listen = ["127.0.0.1:{port}"]

[[tls.certificates]]
cert = "{cert}"
key = "{key}"
"""


def make_cert(base: Path) -> tuple[Path, Path]:
    cert, key = base / "bench.crt", base / "bench.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=bench.test",
         "-addext", "subjectAltName=DNS:bench.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def cases() -> dict[str, str]:
    close = ', {["Connection"] = "close"}'
    return {
        "a) 4 KiB hot, keep-alive": LUA_PATHS.format(n=SMALL_N, fmt="/small/%d.bin", range="", headers=""),
        "b) whole 2 MiB, keep-alive": LUA_PATHS.format(n=LARGE_N, fmt="/large/%d.bin", range="", headers=""),
        "c) handshakes (4 KiB, close)": LUA_PATHS.format(
            n=SMALL_N, fmt="/small/%d.bin", range="", headers=close
        ),
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

    with tempfile.TemporaryDirectory(prefix="cdnlab-tlsbench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        base.chmod(0o755)
        www = base / "www"
        make_files(www)
        cert, key = make_cert(base)
        upstream = stack.enter_context(procs.nginx(base / "upstream", www, workers=1, access_log=False))
        ngx_tls = procs.free_port()
        ngx = stack.enter_context(
            procs.nginx(
                base / "nginx",
                www,
                workers=args.workers,
                access_log=False,
                http_extra=NGINX_TLS.format(port=ngx_tls, root=www, cert=cert, key=key),
            )
        )
        edge_tls = procs.free_port()
        cfg = procs.edge_config([upstream.url], workers=args.workers, capacity="16G", access_log=False)
        cfg += EDGE_TLS.format(port=edge_tls, cert=cert, key=key)
        edge = stack.enter_context(procs.edge(base / "cdnlab", cfg))
        procs.wait_port(ngx_tls)
        procs.wait_port(edge_tls)
        warm(ngx.port)
        warm(edge.port)  # the plain port fills the store the TLS port serves from
        rows = []
        for name, script in cases().items():
            if args.only and args.only not in name:
                continue
            runs: dict[str, list[Result]] = {"nginx": [], "cdnlab": []}
            for _ in range(args.rounds):
                for label, port in (("nginx", ngx_tls), ("cdnlab", edge_tls)):
                    url = f"https://127.0.0.1:{port}"
                    runs[label].append(wrk(url, script, args.duration, args.connections, args.threads))
            n, c = median(runs["nginx"]), median(runs["cdnlab"])
            rows.append((name, n, c))
            print(
                f"{name:30} nginx {n.rps:9.0f} req/s {n.bytes_per_s / 1e9:6.3f} GB/s p99 {n.p99_ms:7.2f} ms"
                f" | cdnlab {c.rps:9.0f} req/s {c.bytes_per_s / 1e9:6.3f} GB/s p99 {c.p99_ms:7.2f} ms"
                f" | ratio req/s {c.rps / n.rps:4.2f}"
                f"{'' if not (n.errors or c.errors) else f' | errors nginx {n.errors} cdnlab {c.errors}'}",
                flush=True,
            )
    if args.markdown:
        print(
            f"\nMachine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s over https, median of "
            f"{args.rounds} alternating rounds; {args.workers} workers each.\n"
        )
        print(
            "| TLS case | nginx req/s | nginx GB/s | cdnlab req/s | cdnlab GB/s | ratio req/s |"
            " p99 ms nginx / cdnlab |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, n, c in rows:
            print(
                f"| {name} | {n.rps:.0f} | {n.bytes_per_s / 1e9:.3f} | {c.rps:.0f} | "
                f"{c.bytes_per_s / 1e9:.3f} | "
                f"{c.rps / n.rps:.2f} | {n.p99_ms:.2f} / {c.p99_ms:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
