"""The host lab (``cdnlab lab up``): the whole CDN on one machine, proved end to end.

1. the AWS emulator (MiniStack) on loopback, shown to the hosts by a forwarder on the lab bridge;
   the cloud tier (``infra.apply``) applied to it through AWS_ENDPOINT_URL;
2. DASH content made with ffmpeg, uploaded to the S3 origin with SHA-256 metadata;
3. appliance hosts, a shield and a control host as systemd-nspawn containers with loop-device
   disks (with ``--hosts vm`` the appliances are qemu VMs on the same bridge, their disks emulated
   NVMe and SATA); the wheel built and ``site.yml`` run over SSH; the testinfra suites run;
4. players (``cdnlab play``) in client namespaces of different prefixes, steered to their sites;
5. drills (drills.py), Prometheus read back, a report (report.py).

State lives in WORKDIR (default lab/out/run): ``lab up`` again reuses the running hosts and
emulator; ``lab down`` removes everything; ``lab status`` says what runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cdnlab.lab import services
from cdnlab.lab.content import Content, ensure_content, upload
from cdnlab.lab.gate import Gate
from cdnlab.lab.hosts import Lab, LabError, ensure_qemu
from cdnlab.lab.topology import (
    ADMIN_PORT,
    CONTROL_PORT,
    EDGE_PORT,
    KEY,
    KEY_ID,
    ORIGIN_PORT,
    Topology,
)
from cdnlab.signing import sign_path

REPO = Path(__file__).resolve().parents[3]
STATE = "cdnlab-lab.json"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Options:
    workdir: Path = Path("lab/out/run")
    out: Path = Path("lab/out")
    topology: Topology = field(default_factory=Topology)
    titles: int = 3
    testinfra: bool = True
    drills: bool = True


def http(
    url: str,
    *,
    method: str = "GET",
    timeout: float = 10,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with _DIRECT.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except OSError as e:
        return 0, {}, str(e).encode()


def signed(path: str, ttl: int = 3600) -> str:
    return sign_path(path, KEY_ID, KEY, int(time.time()) + ttl)


class HostLab:
    """One lab on this machine, its state in WORKDIR."""

    def __init__(self, opts: Options, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.workdir = opts.workdir.resolve()
        self.state_path = self.workdir / STATE
        self.state: dict[str, Any] = {}
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
        topo = self.state.get("topology")
        self.topo = Topology(**topo) if topo else opts.topology
        self.lab = Lab(
            self.workdir / "hosts",
            net=self.topo.net,
            prefix=lab_prefix(self.topo.net),
            progress=self._progress,
        )
        self.gate = Gate(console)
        self.content: Content | None = None
        self.outputs: dict[str, Any] = {}

    def _progress(self, text: str) -> None:
        self.console.print(f"     [dim]… {text}[/]")

    def save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def emulator_port(self) -> int:
        # below the ephemeral port range (32768+), so no outgoing connection can hold it
        return 30000 + self.topo.net

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def origin_url(self) -> str:
        return f"http://{self.lab.controller_address}:{ORIGIN_PORT}/{self.outputs['primary_bucket']}"

    def host(self, name: str) -> Any:
        return self.lab.hosts[name]

    def control_url(self) -> str:
        return f"http://{self.host('ctl1').address}:{CONTROL_PORT}"

    def edge_url(self, name: str) -> str:
        return f"http://{self.host(name).address}:{EDGE_PORT}"

    def admin_url(self, name: str) -> str:
        return f"http://{self.host(name).address}:{ADMIN_PORT}"

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def aws_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    # -- up -----------------------------------------------------------------------------------------

    def up(self) -> Gate:
        g = self.gate
        t = self.topo
        vm = t.hosts == "vm"
        self.console.rule(
            f"[bold]cdnlab lab: {t.sites} site(s) × {t.per_site} appliance(s)"
            f"{' (qemu VMs)' if vm else ''}, a shield, a control host"
        )
        reuse = bool(self.state) and self.lab.running()
        if reuse and self.topo != self.opts.topology:
            self.console.print(
                f"[yellow]a lab of {t.sites} site(s) × {t.per_site} {t.hosts} appliance(s) runs in "
                f"{self.workdir}: reusing it as it is (`cdnlab lab down` first to change its shape)[/]"
            )
        with g.step("prerequisites"):
            why = prerequisites()
            g.check("root, systemd-nspawn, debootstrap, ffmpeg, losetup, ip, ssh", why is None, why or "")
            if why:
                return g
            if vm:
                try:
                    ensure_qemu(self._progress)
                    qemu = None
                except LabError as exc:
                    qemu = str(exc)
                g.check("qemu-system-x86_64 for the appliance VMs", qemu is None, qemu or "")
                if qemu:
                    return g
        with g.step("content", "DASH with ffmpeg, images, assets (cached)"):
            self.content = ensure_content(self.opts.titles, progress=self._progress)
            c = self.content
            g.check(
                "DASH titles made: fMP4 segments and an MPD per title in every bitrate",
                all((c.root / f"content/{ti}/manifest.mpd").exists() for ti in c.titles),
                f"{len(c.titles)} titles × 3 bitrates × {c.segments} segments, {len(c.digests)} objects",
            )
        with g.step(
            "hosts",
            "appliances as qemu VMs (NVMe + SATA disks), shield and control host as containers, one bridge"
            if vm
            else "systemd-nspawn containers on a bridge, loop-device disks",
        ):
            self._hosts(reuse)
        with g.step("cloud tier", "MiniStack on loopback, infra.apply through AWS_ENDPOINT_URL"):
            self._cloud(reuse)
        if not self.outputs:
            return self._finish()
        with g.step("provision", "wheel + site.yml over SSH"):
            self._provision()
        if self.opts.testinfra:
            with g.step("testinfra", "tests/infra against every host"):
                self._testinfra()
        with g.step("fill", "cdnlab fill publish, then cdnlab fill run --now on every appliance"):
            from cdnlab.lab import fill

            fill.run(self)
        with g.step("warm-up", "first segments through every appliance, control plane sees them"):
            self._warm()
        from cdnlab.lab import clients, drills

        with g.step("sessions", "cdnlab play from client prefixes, steered per site"):
            clients.sessions(self)
        if self.opts.drills:
            drills.run_all(self)
        with g.step("prometheus", "every appliance and the control plane scraped"):
            self._prometheus()
        return self._finish()

    def _hosts(self, reuse: bool) -> None:
        g = self.gate
        if reuse:
            self.lab.reattach(self.state["hosts"])
            for name, h in self.lab.hosts.items():  # a VM's disks may have new names since
                self.state["hosts"][name]["disks"] = h.disks
            self.save()
            g.check("the running lab's hosts are reused", True, ", ".join(self.lab.hosts))
        else:
            if self.state:
                self.console.print("     [dim]… a previous lab is not running whole: cleaning it up[/]")
                self.down_quiet()
            self.state = {"topology": dataclasses.asdict(self.topo)}
            self.save()
            self.lab.up(self.topo.specs(), boot_timeout=300, vm_boot_timeout=900)
            self.state["hosts"] = self.lab.describe()
            self.save()
            for i, _site in enumerate(self.topo.site_names):
                self.lab.add_client(f"cl{'abcdefgh'[i]}", self.topo.client_address(i))
            self.state["clients"] = {
                site: {
                    "netns": f"{self.lab.prefix}-cl{'abcdefgh'[i]}",
                    "address": self.topo.client_address(i),
                }
                for i, site in enumerate(self.topo.site_names)
            }
            self.save()
        ok = [
            h.name for h in self.lab.hosts.values() if h.ssh("true", check=False, timeout=30).returncode == 0
        ]
        g.check(
            "every host answers SSH (systemd running)",
            len(ok) == len(self.lab.hosts),
            f"{len(ok)}/{len(self.lab.hosts)}: "
            + ", ".join(f"{h.name} {h.address}" for h in self.lab.hosts.values()),
        )
        containers = {n: h.disks for n, h in self.lab.hosts.items() if h.disks and not h.vm}
        g.check(
            "container appliances have their loop-device NVMe and HDD disks",
            all(Path(d).exists() for ds in containers.values() for d in ds.values()),
            "; ".join(f"{n}: {', '.join(f'{k}={v}' for k, v in ds.items())}" for n, ds in containers.items()),
        )
        vms = [h for h in self.lab.hosts.values() if h.vm]
        if vms:
            seen = {h.name: _disk_kinds(h) for h in vms}
            g.check(
                "VM appliances see an NVMe disk (rotational 0) and a SATA disk (rotational 1)",
                all(
                    ds.get("nvme0", ("",))[0] == "nvme 0" and ds.get("hdd0", ("",))[0] == "sata 1"
                    for ds in seen.values()
                ),
                "; ".join(
                    f"{n}: {', '.join(f'{k}={dev} ({what})' for k, (what, dev) in ds.items())}"
                    for n, ds in seen.items()
                ),
            )

    def _cloud(self, reuse: bool) -> None:
        g = self.gate
        procs = {p["name"]: p for p in self.state.get("procs", [])}
        emu = procs.get("emulator")
        if not (reuse and emu and services.alive(emu)):
            for p in procs.values():
                services.stop(p)
            emu_dir = self.workdir / "emulator"
            emu_dir.mkdir(parents=True, exist_ok=True)
            emu = services.spawn(
                "emulator",
                [
                    services.python(),
                    "-m",
                    "infra.emulator",
                    "--port",
                    str(self.emulator_port),
                    "--workdir",
                    str(emu_dir),
                ],
                emu_dir / "emulator.log",
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            fwd = services.spawn(
                "origin-forwarder",
                [
                    services.python(),
                    "-m",
                    "cdnlab.lab.forward",
                    f"{self.lab.controller_address}:{ORIGIN_PORT}",
                    f"127.0.0.1:{self.emulator_port}",
                ],
                self.workdir / "forwarder.log",
            )
            self.state["procs"] = [emu, fwd]
            self.state.pop("outputs", None)
            self.save()
        else:
            fwd = procs.get("origin-forwarder")
            if fwd and not services.alive(fwd):
                new = services.spawn("origin-forwarder", fwd["args"], self.workdir / "forwarder.log")
                self.state["procs"] = [emu, new]
                self.save()
        deadline = time.monotonic() + 90
        retries = 2  # MiniStack now and then exits at start on a busy machine: start it again
        while time.monotonic() < deadline and http(self.endpoint + "/_ministack/health", timeout=2)[0] != 200:
            if emu is not None and not services.alive(emu) and retries:
                retries -= 1
                self._progress("the emulator exited while starting; starting it again")
                emu = services.spawn(
                    "emulator", emu["args"], Path(emu["log"]), env={**os.environ, "PYTHONPATH": str(REPO)}
                )
                self.state["procs"] = [emu, *(p for p in self.state["procs"] if p["name"] != "emulator")]
                self.save()
            time.sleep(0.3)
        g.check(
            "the AWS emulator answers on loopback",
            http(self.endpoint + "/_ministack/health")[0] == 200,
            self.endpoint,
        )
        if self.state.get("outputs"):
            self.outputs = self.state["outputs"]
            g.check(
                "the cloud tier is applied (reused)", True, f"distribution {self.outputs['distribution_id']}"
            )
        else:
            out_file = self.workdir / "infra-outputs.lab.json"
            proc = subprocess.run(
                [
                    services.python(),
                    "-m",
                    "infra.apply",
                    "--stack",
                    "lab",
                    "--no-cli",
                    "--outputs",
                    str(out_file),
                    "--set",
                    "cdnlab:signingKeys=" + json.dumps({KEY_ID: KEY}),
                ],
                cwd=REPO,
                env=self.aws_env(),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            (self.workdir / "infra-apply.log").write_text(proc.stdout + proc.stderr)
            m = re.search(r"created (\d+) resources", proc.stdout + proc.stderr)
            created = f"{m.group(1)} resources created" if m else ""
            ok = proc.returncode == 0 and out_file.exists()
            g.check(
                "infra.apply creates the cloud tier in the emulator (policies checked first)",
                ok,
                created or (proc.stderr.strip()[-300:] or proc.stdout[-300:]),
            )
            if not ok:
                return
            self.outputs = json.loads(out_file.read_text())
            self.state["outputs"] = self.outputs
            self.save()
        (self.opts.out).mkdir(parents=True, exist_ok=True)
        (self.opts.out / "infra-outputs.lab.json").write_text(json.dumps(self.outputs, indent=2) + "\n")
        assert self.content is not None
        s3 = self.s3()
        n = upload(self.content, s3, self.outputs["primary_bucket"])
        listed = sum(
            len(p.get("Contents", []))
            for p in s3.get_paginator("list_objects_v2").paginate(Bucket=self.outputs["primary_bucket"])
        )
        g.check(
            "content is in the S3 origin bucket with x-amz-meta-sha256",
            listed >= len(self.content.digests),
            f"s3://{self.outputs['primary_bucket']}: {n} uploaded, {listed} objects",
        )
        key = "/content/t0001/240p/seg-00001.m4s"
        probe = (
            'python3 -c "import urllib.request as u,hashlib;'
            f"r=u.urlopen('{self.origin_url}{key}');print(r.headers.get('x-amz-meta-sha256'),"
            'hashlib.sha256(r.read()).hexdigest())"'
        )
        out = self.host("shield1").ssh(probe, check=False).stdout.split()
        g.check(
            "the shield host reaches the S3 origin over the lab network",
            out == [self.content.digests[key]] * 2,
            f"{self.origin_url}{key}",
        )

    def _provision(self) -> None:
        from cdnlab.lab import provision

        provision.site(self)

    def _testinfra(self) -> None:
        from cdnlab.lab import provision

        provision.testinfra(self)

    def _warm(self) -> None:
        """Steering offers an appliance for a title once it holds part of it: fetch each title's
        first segments through each appliance (a fill of a few objects)."""
        g = self.gate
        assert self.content is not None
        bad = []
        for name, _site in self.topo.appliances():
            for title in self.content.titles:
                for key in self.content.segment_keys(title)[:: self.content.segments]:
                    status, _, body = http(self.edge_url(name) + signed(key), timeout=30)
                    if status != 200 or _sha(body) != self.content.digests[key]:
                        bad.append(f"{name}{key}: {status}")
        g.check(
            "every appliance serves the first segments with the origin's bytes", not bad, "; ".join(bad[:3])
        )
        want = {name for name, _ in self.topo.appliances()}
        deadline = time.monotonic() + 60
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, _, body = http(self.control_url() + "/v1/appliances")
            seen = {a["appliance"]["id"]: a for a in json.loads(body)} if status == 200 else {}
            if want <= {i for i, a in seen.items() if a.get("available")}:
                break
            time.sleep(1)
        avail = sorted(i for i, a in seen.items() if a.get("available"))
        g.check("the control plane sees every appliance available", want <= set(avail), ", ".join(avail))

    def _prometheus(self) -> None:
        from cdnlab.lab import metrics

        metrics.collect(self)

    def _finish(self) -> Gate:
        from cdnlab.lab import report

        self.gate.data["topology"] = self.state.get("topology")
        self.gate.data["hosts"] = {
            n: {"address": h.address, "groups": list(h.spec.groups)} for n, h in self.lab.hosts.items()
        }
        report.write(self.gate, self.opts.out, self.console)
        return self.gate

    # -- down / status ------------------------------------------------------------------------------

    def down_quiet(self) -> list[str]:
        problems: list[str] = []
        for p in self.state.get("procs", []):
            if not services.stop(p):
                problems.append(f"{p['name']} (pid {p['pid']}) did not stop")
        try:
            Lab.cleanup(self.lab.workdir)
        except LabError as exc:
            problems.append(str(exc))
        if not problems:
            self.state_path.unlink(missing_ok=True)
            shutil.rmtree(self.workdir / "hosts" / "hosts", ignore_errors=True)
            self.state = {}
        return problems

    def status(self) -> int:
        if not self.state:
            self.console.print(f"no lab in {self.workdir}")
            return 3
        table = Table(title=f"cdnlab lab in {self.workdir}")
        for col in ("what", "where", "state"):
            table.add_column(col)
        running = self.lab.running()
        for name, h in (self.state.get("hosts") or {}).items():
            ok = running and _ssh_ok(self.lab, name, h)
            kind = "VM" if h.get("vm") else "container"
            table.add_row(
                f"host {name} ({kind}; {', '.join(h['groups'])})", h["address"], "up" if ok else "down"
            )
        for p in self.state.get("procs", []):
            table.add_row(p["name"], f"pid {p['pid']}", "running" if services.alive(p) else "stopped")
        for site, c in (self.state.get("clients") or {}).items():
            table.add_row(
                f"client {site}",
                c["address"],
                "present" if Path(f"/run/netns/{c['netns']}").exists() else "gone",
            )
        self.console.print(table)
        if self.state.get("outputs"):
            self.console.print(
                f"distribution {self.state['outputs']['distribution_id']}, "
                f"bucket {self.state['outputs']['primary_bucket']}"
            )
        return 0 if running else 1


def _ssh_ok(lab: Lab, name: str, h: dict[str, Any]) -> bool:
    cmd = [
        "ssh",
        "-i",
        str(lab.key),
        *lab.ssh_options(),
        f"root@{h['address']}",
        "systemctl is-system-running",
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL).stdout
    except subprocess.TimeoutExpired:
        return False
    return out.strip() in ("running", "degraded")


def _disk_kinds(host: Any) -> dict[str, tuple[str, str]]:
    """Disk name → ("TRANSPORT ROTATIONAL", device) as the VM's kernel reports them now."""
    out: dict[str, tuple[str, str]] = {}
    for name, dev in host.disks.items():
        proc = host.ssh(f"lsblk --nodeps --noheadings -o TRAN,ROTA {dev}", check=False, timeout=60)
        out[name] = (" ".join(proc.stdout.split()) or proc.stderr.strip()[:80], dev)
    return out


def lab_prefix(net: int) -> str:
    """Names of the lab's namespaces and links (cdl50-sw, cdl50-ctl, …): one lab per --net."""
    return f"cdl{net}"


def _sha(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


def prerequisites() -> str | None:
    """Why the host lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, loop devices, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "losetup", "ip", "ssh", "mkfs.ext4", "ffmpeg"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the Makefile's DEBIAN_PACKAGES)"
    return None


def query(url: str, params: dict[str, str]) -> Any:
    status, _, body = http(url + "?" + urllib.parse.urlencode(params), timeout=15)
    if status != 200:
        raise LabError(f"{url}: {status} {body[:200]!r}")
    return json.loads(body)


def run_python(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False, **kw)
