"""A purge through the control plane reaching every real edge daemon and the emulated CloudFront:
origin, three edges (``cdnlab edge serve --config`` with ``[admin] purge_token``), moto server,
and the control plane, all started through the CLI; the purge is sent with ``cdnlab purge``."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from control_e2e import CDNLAB, Edge, Lab, free_port, start, wait_http, wait_tcp

PURGE_TOKEN = "e2e-purge-token"
ADMIN_TOKEN = "e2e-admin-token"
SEGMENT = "/content/t0001/480p/seg-00001.m4s"


def _distribution(cf) -> str:  # a minimal distribution for moto to hold invalidations against
    resp = cf.create_distribution(
        DistributionConfig={
            "CallerReference": f"e2e-{time.time()}",
            "Comment": "cdnlab e2e",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "o1",
                        "DomainName": "origin.example.com",
                        "CustomOriginConfig": {
                            "HTTPPort": 80,
                            "HTTPSPort": 443,
                            "OriginProtocolPolicy": "http-only",
                        },
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "o1",
                "ViewerProtocolPolicy": "allow-all",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
        }
    )
    return resp["Distribution"]["Id"]


def _edge(lab: Lab, edge_id: str, site: str) -> Edge:
    port, admin = free_port(), free_port()
    store = lab.root / edge_id
    (store / "flash0").mkdir(parents=True)
    cfg = lab.root / f"{edge_id}.toml"
    cfg.write_text(
        f'id = "{edge_id}"\nsite = "{site}"\nlisten = ["127.0.0.1:{port}"]\n'
        f'upstreams = ["{lab.origin_url}"]\nstate_dir = "{store / "state"}"\n'
        f'[[tiers]]\npath = "{store / "flash0"}"\nkind = "flash"\ncapacity = "64M"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\npurge_token = "{PURGE_TOKEN}"\n'
        "[signing]\nrequired = false\n"
    )
    p = start(edge_id, [CDNLAB, "edge", "serve", "--config", str(cfg)], lab.root)
    lab.procs.append(p)
    e = Edge(edge_id, site, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", p)
    wait_http(f"{e.admin_url}/healthz")
    wait_tcp("127.0.0.1", port)
    lab.edges[edge_id] = e
    return e


def _cache_status(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()
        return r.headers.get("Cache-Status", "")


def _eventually_stored(edge: Edge, path: str, timeout: float = 10.0) -> bool:
    """A hit can be served from a fetch's arrived bytes while its commit is still under way, so
    "stored" means: answered as a hit and listed in the edge's inventory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "hit" in _cache_status(edge.url + path):
            with urllib.request.urlopen(f"{edge.admin_url}/inventory", timeout=5) as r:
                if any(o["key"] == path for o in json.load(r)["objects"]):
                    return True
        time.sleep(0.05)
    return False


def test_purge_reaches_every_edge_and_cloudfront(
    tmp_path: Path, moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    env = {
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cf = boto3.client("cloudfront", region_name="us-east-1")
    dist = _distribution(cf)
    # The distribution id arrives the way a deployment hands it over: the Pulumi stack output file.
    (tmp_path / "stack-output.json").write_text(json.dumps({"cloudfront_distribution_id": dist}))

    lab = Lab(tmp_path)
    try:
        lab.make_origin()
        edges = [_edge(lab, "e1", "site-a"), _edge(lab, "e2", "site-a"), _edge(lab, "e3", "site-b")]
        port = free_port()
        (tmp_path / "control.toml").write_text(
            f'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{tmp_path / "control.db"}"\n'
            f'admin_token = "{ADMIN_TOKEN}"\n'
            '[signing]\nkey = "e2e-signing-key-0123456789"\n'
            f'[steering]\ncloudfront_url = "{lab.origin_url}"\n'
            f'pulumi_stack_output = "{tmp_path / "stack-output.json"}"\n'
            "[health]\ninterval = 0.5\ntimeout = 0.4\n"
            f'[invalidation]\npurge_token = "{PURGE_TOKEN}"\npriority_sites = ["site-b"]\n'
            "batch_size = 1\nbatch_delay = 0.1\nretry_base = 0.1\n"
            '[[invalidation.cascade]]\nmatch = "/content/{title}/manifest.json"\n'
            'then = ["/content/{title}/"]\n'
        )
        lab.procs.append(
            start(
                "control",
                [CDNLAB, "control", "serve", "--config", "control.toml", "--log-level", "warning"],
                tmp_path,
            )
        )
        lab.control_url = f"http://127.0.0.1:{port}"
        wait_http(f"{lab.control_url}/healthz", ok=(200,))
        for e in edges:
            body = json.dumps({"id": e.id, "site": e.site, "url": e.url, "admin_url": e.admin_url}).encode()
            req = urllib.request.Request(
                f"{lab.control_url}/v1/appliances",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 201

        for e in edges:  # fill, then prove it is cached (the commit is asynchronous: poll)
            _cache_status(e.url + SEGMENT)
            assert _eventually_stored(e, SEGMENT)

        cli_env = {**os.environ, "CDNLAB_ADMIN_TOKEN": ADMIN_TOKEN}
        out = subprocess.run(
            [
                CDNLAB,
                "purge",
                "send",
                "/content/t0001/manifest.json",
                "--request-id",
                "rel-1",
                "--control",
                lab.control_url,
                "--wait",
                "--wait-timeout",
                "30",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env,
        )
        assert out.returncode == 0, out.stderr + out.stdout
        inv = json.loads(out.stdout)
        assert inv["state"] == "done"
        assert inv["edge_purges"] == [
            {"prefix": "/content/t0001/"}
        ]  # the cascade's prefix covers the manifest
        st = {t["name"]: t for t in inv["appliances"]}
        assert [(st[i]["stage"], st[i]["state"]) for i in ("e3", "e1", "e2")] == [
            (0, "done"),
            (1, "done"),
            (2, "done"),
        ]
        assert all(t["purged"] >= 1 for t in inv["appliances"])
        assert inv["cloudfront"]["state"] == "done" and inv["cloudfront"]["cloudfront_id"]

        listed = cf.list_invalidations(DistributionId=dist)["InvalidationList"]["Items"]
        assert [i["Id"] for i in listed] == [inv["cloudfront"]["cloudfront_id"]]
        got = cf.get_invalidation(DistributionId=dist, Id=listed[0]["Id"])["Invalidation"]
        assert got["InvalidationBatch"]["Paths"]["Items"] == ["/content/t0001/*"]
        assert got["InvalidationBatch"]["CallerReference"] == inv["id"]

        for e in edges:  # gone from every edge: the next request goes upstream
            assert "fwd=miss" in _cache_status(e.url + SEGMENT)

        # Repeating the request is harmless: the same invalidation, no second CloudFront one.
        again = subprocess.run(
            [
                CDNLAB,
                "purge",
                "send",
                "/content/t0001/manifest.json",
                "--request-id",
                "rel-1",
                "--control",
                lab.control_url,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env,
        )
        assert again.returncode == 0 and json.loads(again.stdout)["id"] == inv["id"]
        assert len(cf.list_invalidations(DistributionId=dist)["InvalidationList"]["Items"]) == 1
        status = subprocess.run(
            [CDNLAB, "purge", "status", inv["id"], "--control", lab.control_url],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env,
        )
        assert status.returncode == 0 and f"{inv['id']}: done" in status.stdout
        # Without the admin token the control plane refuses.
        denied = subprocess.run(
            [CDNLAB, "purge", "send", "/x", "--control", lab.control_url],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in cli_env.items() if k != "CDNLAB_ADMIN_TOKEN"},
        )
        assert denied.returncode == 1 and "401" in denied.stderr
    finally:
        lab.close()
