"""Invalidation fan-out timing: real edge daemons and the control plane on loopback, each edge
holding some objects; time from ``POST /v1/invalidations`` to every edge acknowledging, unstaged
(all appliances at once), over several rounds. CloudFront is left out (no distribution): its
CreateInvalidation is one call whatever the fleet size.

example:
  .venv/bin/python bench/invalidation_fanout.py --edges 6 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "control"))  # the e2e lab helpers

from control_e2e import CDNLAB, Edge, Lab, free_port, start, wait_http, wait_tcp  # noqa: E402

TOKEN, ADMIN = "bench-purge-token", "bench-admin-token"


def _edge(lab: Lab, i: int) -> Edge:
    eid, port, admin = f"e{i}", free_port(), free_port()
    store = lab.root / eid
    (store / "flash0").mkdir(parents=True)
    cfg = lab.root / f"{eid}.toml"
    cfg.write_text(
        f'id = "{eid}"\nsite = "site-{i % 3}"\nlisten = ["127.0.0.1:{port}"]\n'
        f'upstreams = ["{lab.origin_url}"]\nstate_dir = "{store / "state"}"\n'
        f'[[tiers]]\npath = "{store / "flash0"}"\nkind = "flash"\ncapacity = "64M"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\npurge_token = "{TOKEN}"\n[signing]\nrequired = false\n'
    )
    p = start(eid, [CDNLAB, "edge", "serve", "--config", str(cfg)], lab.root)
    lab.procs.append(p)
    e = Edge(eid, f"site-{i % 3}", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", p)
    wait_http(f"{e.admin_url}/healthz")
    wait_tcp("127.0.0.1", port)
    return e


def _req(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(r, timeout=10) as resp:
        return json.load(resp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--objects", type=int, default=8, help="segments each edge holds before each round")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp))
        try:
            lab.make_origin()
            edges = [_edge(lab, i) for i in range(args.edges)]
            port = free_port()
            (lab.root / "control.toml").write_text(
                f'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{lab.root / "c.db"}"\n'
                f'admin_token = "{ADMIN}"\n[signing]\nkey = "bench-signing-key-0123"\n'
                f'[invalidation]\npurge_token = "{TOKEN}"\n'
            )
            lab.procs.append(
                start(
                    "control",
                    [CDNLAB, "control", "serve", "--config", "control.toml", "--log-level", "warning"],
                    lab.root,
                )
            )
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", ok=(200,))
            for e in edges:
                _req(
                    f"{base}/v1/appliances",
                    {"id": e.id, "site": e.site, "url": e.url, "admin_url": e.admin_url},
                )
            server, client, purged = [], [], []
            for r in range(args.rounds):
                for e in edges:
                    for n in range(1, args.objects + 1):
                        with urllib.request.urlopen(f"{e.url}/content/t0001/480p/seg-{n:05d}.m4s") as resp:
                            resp.read()
                time.sleep(0.3)  # commits are asynchronous
                t0 = time.perf_counter()
                inv = _req(
                    f"{base}/v1/invalidations",
                    {"prefixes": ["/content/t0001/"], "staged": False, "request_id": f"b{r}"},
                )
                while inv["state"] not in ("done", "failed"):
                    time.sleep(0.002)
                    inv = _req(f"{base}/v1/invalidations/{inv['id']}")
                client.append(time.perf_counter() - t0)
                assert inv["state"] == "done", inv
                server.append(inv["finished_at"] - inv["started_at"])
                purged.append(sum(t["purged"] for t in inv["appliances"]))
            ms = sorted(1000 * s for s in server)
            cl = sorted(1000 * s for s in client)
            print(
                f"edges={args.edges} rounds={args.rounds} objects purged per round (median)="
                f"{statistics.median(purged):.0f}"
            )
            print(
                f"fan-out (control plane start → last edge ack): median {statistics.median(ms):.1f} ms, "
                f"max {ms[-1]:.1f} ms"
            )
            print(f"client POST → done (polling): median {statistics.median(cl):.1f} ms, max {cl[-1]:.1f} ms")
        finally:
            lab.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
