"""Drills against the running host lab, each with checked outcomes:

* an appliance killed mid-session: the player fails over without a playback failure and steering
  drops the appliance;
* a disk failed under load: the appliance keeps serving correct bytes (a container's loop device
  cut to nothing; a VM's NVMe controller removed from its PCI bus inside the guest);
* the origin unreachable: cached content is still served, a cold object comes from the shield,
  one nobody holds gets a clear 502;
* a title purged through the control plane: gone from every appliance, and the CloudFront
  invalidation recorded in the emulator;
* a corrupt segment at the origin (bytes that do not match ``x-amz-meta-sha256``): never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdnlab.lab import clients, services

if TYPE_CHECKING:
    from cdnlab.lab.hostlab import HostLab

UNIT = "cdnlab-edge.service"


def run_all(lab: HostLab) -> None:
    with lab.gate.step("drill: appliance killed mid-session"):
        kill(lab)
    with lab.gate.step("drill: disk failed under load"):
        disk(lab)
    with lab.gate.step("drill: origin unreachable"):
        origin_down(lab)
    with lab.gate.step("drill: title purged"):
        purge(lab)
    # Last: an edge that gets a 502 from the shield for the corrupt object marks the shield down
    # until its next probe, which would make the outage drill above test the wrong thing.
    with lab.gate.step("drill: corrupt segment at the origin"):
        corrupt(lab)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def kill(lab: HostLab) -> None:
    g = lab.gate
    site = lab.topo.site_names[0]
    if len(lab.topo.appliances()) < 2:
        g.skip("the player fails over when its appliance is killed", "needs two appliances (one site of one)")
        return
    ranked = clients.steer(lab, site)
    victim = ranked[0] if ranked else ""
    if victim not in lab.lab.hosts:
        g.check("steering offers an appliance to kill", False, str(ranked))
        return
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def event(text: str) -> None:
        events.append({"t": round(time.monotonic() - t0, 2), "event": text})

    event(f"player starts in {site}, steering ranks {', '.join(ranked)}")
    # Real time: the player keeps 5 segments (10 s) ahead and fetches the rest of the 16 s title
    # from about 4 s on, so the kill at 3 s lands mid-session; at 1.5x a quiet machine had
    # everything buffered before the kill and never needed to fail over.
    player = clients.play(lab, site, "t0002", speed=1.0)
    time.sleep(3.0)
    lab.host(victim).ssh(f"systemctl kill --signal=SIGKILL {UNIT}; systemctl stop {UNIT}", check=False)
    event(f"{victim}'s delivery daemon killed (SIGKILL)")
    dropped = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if victim not in clients.steer(lab, site):
            dropped = time.monotonic() - t0
            event(f"steering no longer offers {victim}")
            break
        time.sleep(0.3)
    q = clients.result(player)
    event(f"player finished: completed={q.get('completed')}, failovers={q.get('failovers')}")
    lab.gate.data["failover"] = events
    lab.gate.data.setdefault("qoe", {})[f"{lab.state['clients'][site]['address']} t0002 (kill drill)"] = q | {
        "site": site
    }
    killed_at = events[1]["t"]
    g.check(
        f"steering drops the killed {victim}",
        dropped is not None,
        f"after {dropped - killed_at:.1f} s" if dropped is not None else "still offered after 30 s",
    )
    g.check(
        "the player fails over and finishes without a playback failure",
        bool(q.get("completed"))
        and q.get("failovers", 0) >= 1
        and not any(str(e).startswith("stopped") for e in q.get("errors", [])),
        f"failovers {q.get('failovers')}, rebuffers {q.get('rebuffer_count')}, "
        f"endpoints {q.get('endpoints_used')}",
    )
    lab.host(victim).ssh(f"systemctl start {UNIT}", check=False)
    back = _wait(lambda: victim in clients.steer(lab, site), 60)
    g.check(f"{victim} restarted and is offered again", back)


def _wait(cond: Any, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


class _LoopFailure:
    """A container's NVMe: the loop device's backing file is cut to nothing, so every read of it
    is an I/O error, as from a dead drive; replaced by putting the bytes back."""

    def __init__(self, host: Any) -> None:
        self.dev = host.disks["nvme0"]
        self.image = host.dir / "disks" / "nvme0.img"
        self.size = self.image.stat().st_size
        self.backup = self.image.with_suffix(".before-drill")

    def fail(self) -> str:
        subprocess.run(["cp", "--sparse=always", str(self.image), str(self.backup)], check=True)
        with open(self.image, "r+b") as f:
            f.truncate(0)
        subprocess.run(["losetup", "-c", self.dev], check=False, capture_output=True)
        # A dead drive whose files still sit in the page cache fails no read: drop the clean
        # pages so reads reach the device (a lab up run twice had every segment cached).
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return f"{self.dev}'s backing file cut to 0 bytes"

    def replace(self) -> None:
        subprocess.run(["cp", "--sparse=always", str(self.backup), str(self.image)], check=True)
        self.backup.unlink()
        with open(self.image, "r+b") as f:
            f.truncate(self.size)
        subprocess.run(["losetup", "-c", self.dev], check=False, capture_output=True)


class _GuestNvmeFailure:
    """A VM's NVMe fails in its own kernel: the controller is removed from the PCI bus (as a drive
    that drops off the bus), and the page cache dropped so reads reach the device. Replaced by a
    PCI rescan, which finds the same drive with its data."""

    def __init__(self, host: Any) -> None:
        from cdnlab.lab.hosts import DiskSpec, _serial

        self.host = host
        self.serial = _serial(DiskSpec("nvme0"))

    def fail(self) -> str:
        pci = self.host.ssh(
            "for c in /sys/class/nvme/nvme*; do "
            f'[ "$(tr -d " " < $c/serial)" = {self.serial} ] && readlink -f $c/device; done',
            timeout=60,
        ).stdout.strip()
        if not pci.startswith("/sys/devices/pci"):
            raise RuntimeError(f"{self.host.name}: no NVMe controller with serial {self.serial}")
        self.host.ssh(f"echo 1 > {pci}/remove; sync; echo 3 > /proc/sys/vm/drop_caches", timeout=120)
        return f"NVMe controller {pci.rsplit('/', 1)[-1]} removed from the guest's PCI bus"

    def replace(self) -> None:
        self.host.ssh("echo 1 > /sys/bus/pci/rescan; udevadm settle", timeout=120)


def disk(lab: HostLab) -> None:
    """Fail the appliance's NVMe under load (a dead drive: every read an I/O error), check that it
    keeps serving the origin's bytes, then replace the drive."""
    from cdnlab.lab.hostlab import http, signed

    g = lab.gate
    assert lab.content is not None
    name, _site = lab.topo.appliances()[-1]
    host = lab.host(name)
    keys = [k for t in lab.content.titles for k in lab.content.segment_keys(t)]
    for k in keys:  # load it up: every segment through this appliance
        http(lab.edge_url(name) + signed(k), timeout=30)
    failure = _GuestNvmeFailure(host) if host.vm else _LoopFailure(host)
    how = failure.fail()
    lab.gate.data.setdefault("disk_drill", {})[name] = how
    bad: list[str] = []
    t0 = time.monotonic()
    cut: list[str] = []  # connections closed mid-answer: the drive died under a request in flight
    for k in keys * 2:
        status, _, body = http(lab.edge_url(name) + signed(k), timeout=30)
        if status == 0 and not cut:
            cut.append(f"{k}: {body.decode(errors='replace')[:80]}")
        elif status != 200 or _sha(body) != lab.content.digests[k]:
            bad.append(f"{k}: {status}" + (f" {body.decode(errors='replace')[:80]}" if status == 0 else ""))
    secs = time.monotonic() - t0
    failed: list[Any] = []

    def noticed() -> bool:
        _, _, raw = http(lab.admin_url(name) + "/healthz")
        try:
            disks = json.loads(raw).get("disks", [])
        except ValueError:
            return False
        failed[:] = [d for d in disks if d.get("failed")]
        return bool(failed)

    g.check(
        f"{name} marks the disk failed and drops its objects",
        _wait(noticed, 30),
        f"{how}: " + "; ".join(f"{d['kind']} {d['path']}: {d.get('reason')}" for d in failed),
    )
    status, _, body = http(lab.admin_url(name) + "/healthz")
    g.check(
        f"{name} keeps serving correct bytes with its NVMe failed under load",
        not bad,
        # One request in flight when the drive dies can only be cut (its head went out); a
        # player retries it. Every other answer must be the right bytes.
        f"{len(keys) * 2} requests in {secs:.1f} s"
        + (f", 1 cut when the drive died under it ({cut[0]})" if cut else "")
        + (f", bad: {bad[:3]}" if bad else ""),
    )
    g.check(
        f"{name} still reports serving on /healthz",
        status == 200 and b'"serving"' in body,
        body[:200].decode(errors="replace"),
    )
    # The drive is replaced by the same one: data back, capacity back, remounted (by label, from
    # fstab; nouuid if the old mount of the same filesystem still lingers), daemon restarted.
    failure.replace()
    mounts = " ".join(d["path"] for d in failed if d.get("kind") != "ram")
    host.ssh(
        f"systemctl stop {UNIT}; for m in {mounts}; do umount -l $m; mount $m || mount -o nouuid $m; done;"
        f" systemctl start {UNIT}",
        check=False,
        timeout=300,
    )
    back = _wait(lambda: http(lab.admin_url(name) + "/healthz")[0] == 200 and not noticed(), 60)
    g.check(f"{name} serves with the replaced disk back in service", back)


def corrupt(lab: HostLab) -> None:
    """An object at the origin whose bytes do not match its x-amz-meta-sha256: the edges must
    refuse it (502), not serve or store it."""
    from cdnlab.lab.hostlab import http, signed

    g = lab.gate
    assert lab.content is not None
    key = "content/t0001/720p/seg-corrupt.m4s"
    good = (lab.content.root / "content/t0001/720p/seg-00001.m4s").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    lab.s3().put_object(
        Bucket=lab.outputs["primary_bucket"], Key=key, Body=bytes(bad), Metadata={"sha256": _sha(good)}
    )
    served = []
    for name, _ in lab.topo.appliances():
        status, _hdrs, body = http(lab.edge_url(name) + signed("/" + key), timeout=30)
        if status == 200 or _sha(body) == _sha(bytes(bad)):
            served.append(f"{name}: {status}")
        last = (status, body[:120])
    g.check(
        "a segment whose bytes do not match its SHA-256 at the origin is never served",
        not served,
        f"every appliance answered {last[0]}: {last[1].decode(errors='replace').strip()}"
        if not served
        else str(served),
    )
    lab.s3().delete_object(Bucket=lab.outputs["primary_bucket"], Key=key)


def origin_down(lab: HostLab) -> None:
    from cdnlab.lab.hostlab import http, signed

    g = lab.gate
    assert lab.content is not None
    fwd = next(p for p in lab.state["procs"] if p["name"] == "origin-forwarder")
    name, _ = lab.topo.appliances()[0]
    cached = lab.content.segment_keys("t0001")[0]
    http(lab.edge_url(name) + signed(cached), timeout=30)
    # Two new objects at the origin (new names each run): one fetched through the shield before
    # the outage (only the shield holds it), one nobody has asked for.
    stamp = int(time.time() * 1000)
    bodies = {
        f"/static/drill-{stamp}-{kind}.txt": f"{kind} {stamp}\n".encode() * 64 for kind in ("shield", "cold")
    }
    for key, body in bodies.items():
        lab.s3().put_object(
            Bucket=lab.outputs["primary_bucket"],
            Key=key.lstrip("/"),
            Body=body,
            Metadata={"sha256": _sha(body)},
        )
    digests = {k: _sha(b) for k, b in bodies.items()}
    shield_only, cold = list(bodies)
    http(f"http://{lab.host('shield1').address}{shield_only}", timeout=30)
    services.stop(fwd)
    try:
        status, hdrs, body = http(lab.edge_url(name) + signed(cached), timeout=30)
        g.check(
            "with the origin unreachable, cached content is still served",
            status == 200 and _sha(body) == lab.content.digests[cached],
            f"{status} {hdrs.get('cache-status', '')}",
        )
        status, hdrs, body = http(lab.edge_url(name) + signed(shield_only), timeout=30)
        g.check(
            "a cold object the shield holds comes from the shield",
            status == 200 and _sha(body) == digests[shield_only],
            f"{status} {hdrs.get('cache-status', '')}",
        )
        status, hdrs, body = http(lab.edge_url(name) + signed(cold), timeout=60)
        g.check(
            "an object nobody holds gets a clear 502, not bad bytes",
            status in (502, 504) and len(body) < 2000,
            f"{status} {body.decode(errors='replace').strip()[:160]}",
        )
    finally:
        new = services.spawn("origin-forwarder", fwd["args"], lab.workdir / "forwarder.log")
        lab.state["procs"] = [p for p in lab.state["procs"] if p["name"] != "origin-forwarder"] + [new]
        lab.save()
        for key in bodies:  # the drill's objects do not pile up in the origin, run after run
            with contextlib.suppress(Exception):
                lab.s3().delete_object(Bucket=lab.outputs["primary_bucket"], Key=key.lstrip("/"))


def _inventory_keys(lab: HostLab, name: str) -> list[str]:
    from cdnlab.lab.hostlab import http

    status, _, body = http(lab.admin_url(name) + "/inventory", timeout=30)
    return [o["key"] for o in json.loads(body).get("objects", [])] if status == 200 else ["?"]


def purge(lab: HostLab) -> None:
    """``cdnlab purge send`` through the control plane: the title is gone from every appliance."""
    from cdnlab.lab.clients import CDNLAB

    g = lab.gate
    assert lab.content is not None
    title = lab.content.titles[-1]
    prefix = f"/content/{title}/"
    edges = [n for n, _ in lab.topo.appliances()]
    held = {n: sum(k.startswith(prefix) for k in _inventory_keys(lab, n)) for n in edges}
    g.check(f"before the purge the appliances hold {title}", any(held.values()), str(held))
    proc = subprocess.run(
        [
            CDNLAB,
            "purge",
            "send",
            "--control",
            lab.control_url(),
            "--prefix",
            prefix,
            "--wait",
            "--json",
            "--wait-timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=clients._env(),
    )
    try:
        inv = json.loads(proc.stdout)
    except ValueError:
        inv = {}
    g.check(
        f"cdnlab purge send --prefix {prefix} completes through the control plane",
        proc.returncode == 0 and inv.get("state") in ("done", "completed"),
        f"state {inv.get('state')}, id {inv.get('id')}"
        + (f": {proc.stderr.strip()[-300:]}" if proc.returncode else ""),
    )
    left = {n: sum(k.startswith(prefix) for k in _inventory_keys(lab, n)) for n in edges}
    g.check(f"{title} is gone from every appliance", not any(left.values()), str(left))
    _cloudfront_recorded(lab, inv, prefix + "*")


def _cloudfront_recorded(lab: HostLab, inv: dict[str, Any], path: str) -> None:
    """The control plane says it invalidated CloudFront; the emulator, asked with boto3 from the
    controller, must hold that invalidation for the lab's distribution, with the purged path."""
    import boto3

    from cdnlab.lab.topology import AWS_KEY, AWS_REGION

    g = lab.gate
    cf = inv.get("cloudfront") or {}
    inv_id = cf.get("cloudfront_id")
    g.check(
        "the control plane sent the CloudFront invalidation",
        cf.get("state") == "done" and bool(inv_id),
        str(cf) if cf else "no CloudFront target (no distribution id, or boto3 missing on the host)",
    )
    if not inv_id:
        return
    dist = lab.outputs["distribution_id"]
    client = boto3.client(
        "cloudfront",
        endpoint_url=lab.endpoint,
        region_name=AWS_REGION,
        aws_access_key_id=AWS_KEY,
        aws_secret_access_key=AWS_KEY,
    )
    try:
        got = client.get_invalidation(DistributionId=dist, Id=inv_id)["Invalidation"]
        listed = client.list_invalidations(DistributionId=dist)["InvalidationList"].get("Items", [])
    except Exception as e:  # any botocore error is a failed check, with its text
        g.check(f"the emulator holds CloudFront invalidation {inv_id}", False, f"{dist}: {e}")
        return
    paths = got["InvalidationBatch"]["Paths"].get("Items", [])
    g.check(
        f"the emulator recorded CloudFront invalidation {inv_id} of {path} on {dist}",
        path in paths
        and got["InvalidationBatch"]["CallerReference"] == inv.get("id")
        and any(i["Id"] == inv_id for i in listed),
        f"paths {paths}, status {got.get('Status')}, {len(listed)} listed",
    )
