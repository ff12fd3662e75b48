"""Appliance hosts: Debian booted under ``systemd-nspawn`` (or as a qemu VM), reachable over SSH.

Each host is a copy-on-write overlay of one cached debootstrap root filesystem, booted with systemd
as PID 1 in a network namespace of its own, wired to a bridge that lives in a "switch" namespace,
with sparse files on loop devices handed in as its disks. The machine running this (the Ansible
controller) sits on the same bridge, so it reaches every host and the hosts reach each other::

    root namespace                 switch namespace (PREFIX-sw)          host namespace (PREFIX-NAME)
    PREFIX-ctl 10.203.N.1/24 ──veth── ctl ─┐
                                           br0 ── hI ──veth── eth0 10.203.N.(11+I)/24, sshd, systemd
                                           └── …

A host may instead be a qemu VM (``HostSpec(vm=True)``, software emulation): its port on the bridge
is a tap device in the switch namespace, where qemu runs; its disks are sparse files behind an
emulated NVMe controller (flash) or SATA disks on an AHCI controller (HDD), found in the guest by
serial number under the names its kernel gave them (``/dev/nvme0n1``, ``/dev/sda``).

Only private addresses inside namespaces this module creates are used. ``Lab.down`` removes
everything ``Lab.up`` made (containers, VMs and their taps and disk images, overlay mounts, loop
devices, namespaces, the bridge, SSH master connections), and ``Lab.cleanup(workdir)`` does the
same for a run that crashed, from the state file kept in the work directory.

Example::

    from cdnlab.lab.hosts import DiskSpec, HostSpec, Lab

    with Lab(Path("/tmp/lab"), net=7) as lab:
        lab.up([HostSpec("oca1", groups=("appliances",), disks=(DiskSpec("nvme0", "2G", "flash"),))])
        print(lab.hosts["oca1"].ssh("lsblk").stdout)
        inventory = lab.write_inventory()          # for ansible-playbook -i / testinfra

Needs root, ``debootstrap``, ``systemd-container`` (systemd-nspawn), ``iproute2``, ``util-linux``
(losetup) and ``openssh-client`` on the machine running it; VMs need ``qemu-system-x86`` (installed
on demand by ``ensure_qemu``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CACHE_DIR = Path(os.environ.get("CDNLAB_LAB_CACHE", "/var/cache/cdnlab-lab"))
SUITE = "bookworm"
# What a fresh appliance or control node needs that the roles would otherwise fetch from the
# network: the hosts have no route to a package mirror, so the image carries the packages and the
# roles find them installed. Services the roles manage are disabled in the image, so the roles
# enable and start them as they would on a fresh machine.
ROOTFS_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-apt",
    "python3-psycopg2",
    "iproute2",
    "procps",
    "xfsprogs",
    "e2fsprogs",
    "logrotate",
    "ca-certificates",
    "postgresql",
    "prometheus",
)
DISABLED_SERVICES = ("postgresql.service", "prometheus.service", "prometheus-node-exporter.service")
# Bump when the recipe below changes in a way the package list does not show.
_RECIPE = "3"
RUNTIME_DIR = Path("/run/cdnlab-lab")
# Lab hosts are throwaway machines with fresh keys on every build: no host-key prompts, no
# agent or password fallback, errors only.
SSH_OPTIONS = (
    *("-o", "StrictHostKeyChecking=no"),
    *("-o", "UserKnownHostsFile=/dev/null"),
    *("-o", "LogLevel=ERROR"),
    *("-o", "BatchMode=yes"),
    *("-o", "ConnectTimeout=10"),
)
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")

Progress = Callable[[str], None]


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and where to look."""


def _run(
    args: Sequence[str], *, check: bool = True, timeout: float = 120, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, input=input_, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def _quiet(_: str) -> None:
    return None


# -- the root filesystem ---------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the lab builds its image from the same one)."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
                if "security" not in m.group(1) and "debian" in m.group(1):
                    return m.group(1)
        elif path.name == "sources.list" or path.suffix == ".list":
            for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
                if "security" not in m.group(1) and "debian" in m.group(1):
                    return m.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rootfs_key(packages: Sequence[str] = ROOTFS_PACKAGES, suite: str = SUITE) -> str:
    blob = json.dumps([_RECIPE, suite, sorted(packages)]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def ensure_rootfs(
    cache_dir: Path = CACHE_DIR,
    *,
    packages: Sequence[str] = ROOTFS_PACKAGES,
    suite: str = SUITE,
    mirror: str | None = None,
    progress: Progress = _quiet,
) -> Path:
    """The cached root filesystem for PACKAGES, built with debootstrap the first time (a few
    minutes; later calls return at once). Safe to call from several processes at a time."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"rootfs-{suite}-{rootfs_key(packages, suite)}"
    ok = target / ".cdnlab-rootfs-ok"
    if ok.exists():
        return target
    with _locked(cache_dir / f"{target.name}.lock"):
        if ok.exists():
            return target
        if shutil.which("debootstrap") is None:
            raise LabError(
                "debootstrap is not installed (Debian package debootstrap; `make test` installs it)"
            )
        tmp = cache_dir / f"{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        mirror = mirror or debian_mirror()
        progress(f"debootstrap {suite} from {mirror} into {tmp} (once; cached afterwards)")
        log = cache_dir / f"{target.name}.debootstrap.log"
        with open(log, "w") as out:
            rc = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    suite,
                    str(tmp),
                    mirror,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1800,
                check=False,
            ).returncode
        if rc != 0:
            raise LabError(f"debootstrap failed ({rc}); see {log}")
        for unit in DISABLED_SERVICES:
            _run(["systemctl", f"--root={tmp}", "disable", unit], check=False)
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        (tmp / "etc/hostname").write_text("debian\n")
        ok_tmp = tmp / ".cdnlab-rootfs-ok"
        ok_tmp.write_text(json.dumps({"suite": suite, "packages": sorted(packages), "mirror": mirror}) + "\n")
        tmp.rename(target)
        progress(f"root filesystem ready: {target}")
    return target


def build_wheelhouse(repo: Path, cache_dir: Path = CACHE_DIR, *, progress: Progress = _quiet) -> Path:
    """Wheels of cdnlab's run-time dependencies (not cdnlab itself), for hosts with no route to
    a package index: pass the directory to the roles as ``cdnlab_package_wheelhouse``. Cached by
    the dependency list in pyproject.toml."""
    import tomllib

    project = tomllib.loads((Path(repo) / "pyproject.toml").read_text())["project"]
    deps = sorted(project.get("dependencies", []))
    key = hashlib.sha256(json.dumps(deps).encode()).hexdigest()[:12]
    target = Path(cache_dir) / f"wheelhouse-{key}"
    ok = target / ".cdnlab-wheelhouse-ok"
    if ok.exists():
        return target
    with _locked(Path(cache_dir) / f"{target.name}.lock"):
        if ok.exists():
            return target
        tmp = Path(cache_dir) / f"{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress(f"building the dependency wheelhouse in {target} (once)")
        proc = subprocess.run(
            [_python(), "-m", "pip", "wheel", "-q", "--wheel-dir", str(tmp), *deps],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"pip wheel failed: {proc.stderr[-2000:]}")
        (tmp / ".cdnlab-wheelhouse-ok").write_text(json.dumps(deps) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def wheelhouse_archive(repo: Path, cache_dir: Path = CACHE_DIR, *, progress: Progress = _quiet) -> Path:
    """The wheelhouse as one uncompressed tar (the roles unpack it in one step, which is much
    faster over SSH than copying each wheel). Byte-for-byte stable for the same wheels."""
    import tarfile

    wheels = build_wheelhouse(repo, cache_dir, progress=progress)
    archive = wheels.with_suffix(".tar")
    if archive.exists():
        return archive
    with _locked(wheels.with_suffix(".tar.lock")):
        if archive.exists():
            return archive
        tmp = wheels.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for whl in sorted(wheels.glob("*.whl")):
                info = tar.gettarinfo(str(whl), arcname=whl.name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 315532800
                info.mode = 0o644
                with open(whl, "rb") as f:
                    tar.addfile(info, f)
        tmp.replace(archive)
    return archive


def _python() -> str:
    import sys

    return sys.executable


def render_template(name: str, templates_dir: Path | None = None, **variables: Any) -> str:
    """Render one of the shared templates (templates/NAME) as Ansible's template module does
    (trim_blocks, trailing newline kept), so the lab and the roles produce the same files."""
    import jinja2

    root = Path(templates_dir) if templates_dir else Path(__file__).resolve().parents[3] / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    variables.setdefault("managed_by", "Generated by the cdnlab lab.")
    return env.get_template(name).render(**variables)


# -- hosts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskSpec:
    """A disk handed to a host: a sparse file on a loop device. SIZE 0 makes a failed disk (a
    device that is there but has no medium), as a dead drive looks to the OS."""

    name: str
    size: int | str = "1G"
    kind: Literal["flash", "hdd"] = "flash"

    def size_bytes(self) -> int:
        if isinstance(self.size, int):
            return self.size
        m = re.fullmatch(r"(\d+)([KMGT]?)", self.size.strip().upper())
        if not m:
            raise ValueError(f"disk {self.name}: size {self.size!r} (expected e.g. 512M, 2G)")
        return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


@dataclass(frozen=True)
class HostSpec:
    """A host to boot: NAME is its hostname and inventory name; GROUPS and VARS go to the
    generated inventory."""

    name: str
    groups: tuple[str, ...] = ()
    disks: tuple[DiskSpec, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    # a qemu VM on the bridge (a tap port) instead of a container: its flash disks are emulated
    # NVMe, its HDDs SATA disks on an AHCI controller, seen by a real kernel under real names
    vm: bool = False


@dataclass
class Host:
    spec: HostSpec
    address: str
    netns: str
    dir: Path
    ssh_base: list[str]
    # disk name → device path as the host sees it (/dev/loopN; in a VM /dev/nvme0n1, /dev/sda)
    disks: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vm(self) -> bool:
        return self.spec.vm

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> Path:
        """The host's root filesystem as seen from the controller (the overlay mount)."""
        return self.dir / "root"

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run COMMAND (a shell line) on the host as root."""
        proc = subprocess.run(
            [*self.ssh_base, f"root@{self.address}", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"{self.name}: `{command}` exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
            )
        return proc


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    return start is not None and _start_time(pid) == start


def _is_mount(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


class Lab:
    """A set of nspawn hosts on one private /24 (10.203.NET.0/24). Use as a context manager, or
    call ``up`` and ``down``. Two labs on one machine need different NET values."""

    def __init__(
        self,
        workdir: Path,
        *,
        net: int = 0,
        prefix: str | None = None,
        cache_dir: Path = CACHE_DIR,
        rootfs: Path | None = None,
        progress: Progress = _quiet,
    ) -> None:
        if not 0 <= net <= 255:
            raise ValueError("net must be 0..255 (the third octet of 10.203.NET.0/24)")
        self.workdir = Path(workdir).resolve()
        self.net = net
        self.prefix = prefix or f"cl{net}"
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.prefix):
            raise ValueError("prefix: 1-6 lower-case letters and digits, starting with a letter")
        self.cache_dir = Path(cache_dir)
        self._rootfs = rootfs
        self.progress = progress
        self.hosts: dict[str, Host] = {}
        self._state: dict[str, Any] = {}
        self.key = self.workdir / "ssh" / "id_ed25519"
        # SSH master sockets: a short path (a Unix socket path has at most 107 bytes).
        self.runtime_dir = RUNTIME_DIR / self.prefix

    # -- addresses and names ------------------------------------------------------------------

    @property
    def controller_address(self) -> str:
        """The controller's address on the lab network (reachable from every host)."""
        return f"10.203.{self.net}.1"

    @property
    def switch_netns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def controller_link(self) -> str:
        return f"{self.prefix}-ctl"

    def ssh_options(self) -> list[str]:
        control = self.runtime_dir / "cp-%h"
        return [
            *SSH_OPTIONS,
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=60s",
            "-o",
            f"ControlPath={control}",
        ]

    # -- state file (for cleanup after a crash) -------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.workdir / "lab-state.json"

    def _record(self, kind: str, value: Any) -> None:
        self._state.setdefault(kind, [])
        if value not in self._state[kind]:
            self._state[kind].append(value)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1))
        tmp.replace(self._state_file)

    # -- bring up -------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(
        self, specs: Sequence[HostSpec], *, boot_timeout: float = 180, vm_boot_timeout: float = 900
    ) -> dict[str, Host]:
        """Boot SPECS (in parallel) and wait until each answers SSH with systemd running. VMs
        (``HostSpec.vm``) boot under software emulation: minutes, hence their own timeout."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, loop devices, systemd-nspawn)")
        for tool in ("systemd-nspawn", "ip", "losetup", "ssh", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (see the Makefile's DEBIAN_PACKAGES)")
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or not all(_NAME.match(n) for n in names):
            raise ValueError(f"host names must be unique DNS labels of at most 20 characters: {names}")
        if len(self.hosts) + len(specs) > 200:
            raise ValueError("at most 200 hosts per lab")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.hosts:
            Lab.cleanup(self.workdir)
            self._state = {"prefix": self.prefix, "net": self.net}
        rootfs = self._rootfs or ensure_rootfs(self.cache_dir, progress=self.progress)
        image = None
        if any(s.vm for s in specs):
            ensure_qemu(self.progress)
            image = ensure_vm_image(self.cache_dir, progress=self.progress)
        self._ensure_nspawn_runtime()
        self._ensure_key()
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._record("runtime_dir", str(self.runtime_dir))
        if not self.hosts:
            self._make_switch()
        first = 11 + len(self.hosts)
        new: list[Host] = []
        for i, spec in enumerate(specs):
            host = self._prepare_vm(spec, first + i) if spec.vm else self._prepare(spec, first + i, rootfs)
            self.hosts[spec.name] = host
            new.append(host)
        # the VMs first: they take longest to boot
        for host in sorted(new, key=lambda h: not h.vm):
            if host.vm:
                assert image is not None
                self._boot_vm(host, image)
            else:
                self._write_etc_hosts(host)
                self._boot(host)
        t0 = time.monotonic()
        for host in new:
            self._wait_ready(host, t0 + (vm_boot_timeout if host.vm else boot_timeout))
        return self.hosts

    def _ensure_nspawn_runtime(self) -> None:
        if Lab._ensure_nspawn_runtime_static():
            self._record("nspawn_tmpfs", "/run/systemd/nspawn")

    @staticmethod
    def _ensure_nspawn_runtime_static() -> bool:
        """systemd-nspawn keeps per-machine state under /run/systemd/nspawn; on a host whose /run
        is not a tmpfs managed by systemd it needs one there. True if this call mounted it."""
        path = Path("/run/systemd/nspawn")
        path.mkdir(parents=True, exist_ok=True)
        if _is_mount(path):
            return False
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(path)])
        return True

    def _ensure_key(self) -> None:
        self.key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"cdnlab-lab-{self.prefix}",
                    "-f",
                    str(self.key),
                ]
            )

    def _netns_exists(self, name: str) -> bool:
        return Path(f"/run/netns/{name}").exists()

    def _make_switch(self) -> None:
        sw = self.switch_netns
        if self._netns_exists(sw) or Path(f"/sys/class/net/{self.controller_link}").exists():
            raise LabError(
                f"network namespace {sw} or link {self.controller_link} already exists: another lab "
                f"with net={self.net} is running (use another net), or run Lab.cleanup on its workdir"
            )
        _run(["ip", "netns", "add", sw])
        self._record("netns", sw)
        _run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", sw, "link", "set", "br0", "up"])
        _run(["ip", "link", "add", self.controller_link, "type", "veth", "peer", "name", "ctl", "netns", sw])
        self._record("links", self.controller_link)
        _run(["ip", "-n", sw, "link", "set", "ctl", "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.controller_address}/24", "dev", self.controller_link])
        _run(["ip", "link", "set", self.controller_link, "up"])

    def _prepare(self, spec: HostSpec, octet: int, rootfs: Path) -> Host:
        hdir = self.workdir / "hosts" / spec.name
        shutil.rmtree(hdir, ignore_errors=True)
        for sub in ("upper", "work", "root", "disks"):
            (hdir / sub).mkdir(parents=True)
        root = hdir / "root"
        _run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={rootfs},upperdir={hdir / 'upper'},workdir={hdir / 'work'}",
                str(root),
            ]
        )
        self._record("mounts", str(root))
        (root / "etc/hostname").write_text(spec.name + "\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        host = Host(
            spec=spec,
            address=f"10.203.{self.net}.{octet}",
            netns=f"{self.prefix}-{spec.name}",
            dir=hdir,
            ssh_base=["ssh", "-i", str(self.key), *self.ssh_options()],
        )
        for disk in spec.disks:
            image = hdir / "disks" / f"{disk.name}.img"
            with open(image, "wb") as f:
                f.truncate(disk.size_bytes())
            dev = _run(["losetup", "--find", "--show", str(image)]).stdout.strip()
            self._record("loops", {"device": dev, "file": str(image)})
            host.disks[disk.name] = dev
        # network: a namespace with eth0, the other end on the switch's bridge
        _run(["ip", "netns", "add", host.netns])
        self._record("netns", host.netns)
        port = f"h{octet}"
        _run(
            [
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                host.netns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.switch_netns,
            ]
        )
        _run(["ip", "-n", self.switch_netns, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        return host

    def _etc_hosts(self, host: Host) -> str:
        lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}", f"{self.controller_address}\tcontroller"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts.values()]
        return "\n".join(lines) + "\n"

    def _write_etc_hosts(self, host: Host) -> None:
        (host.root / "etc/hosts").write_text(self._etc_hosts(host))

    # -- VMs ------------------------------------------------------------------------------------

    def _prepare_vm(self, spec: HostSpec, octet: int) -> Host:
        """A VM's sparse disk images and its port on the bridge: a tap device in the switch
        namespace, which qemu (started in that namespace) opens."""
        hdir = self.workdir / "hosts" / spec.name
        shutil.rmtree(hdir, ignore_errors=True)
        (hdir / "disks").mkdir(parents=True)
        host = Host(
            spec=spec,
            address=f"10.203.{self.net}.{octet}",
            netns="",  # its network stack is the guest kernel's
            dir=hdir,
            ssh_base=["ssh", "-i", str(self.key), *self.ssh_options()],
        )
        for disk in spec.disks:
            image = hdir / "disks" / f"{disk.name}.img"
            with open(image, "wb") as f:
                f.truncate(disk.size_bytes())
            self._record("vm_images", str(image))
        tap = _tap(octet)
        _run(["ip", "-n", self.switch_netns, "tuntap", "add", "dev", tap, "mode", "tap"])
        self._record("taps", tap)
        _run(["ip", "-n", self.switch_netns, "link", "set", tap, "master", "br0", "up"])
        return host

    def _boot_vm(self, host: Host, image: VmImage) -> None:
        octet = int(host.address.rsplit(".", 1)[1])
        qemu = shutil.which("qemu-system-x86_64")
        assert qemu is not None
        key = base64.b64encode(self.key.with_suffix(".pub").read_bytes().strip()).decode()
        cmdline = f"{_VM_CMDLINE} systemd.hostname={host.name} cdnlab.net={host.address}/24 cdnlab.key={key}"
        args = [
            "ip",
            "netns",
            "exec",
            self.switch_netns,
            qemu,
            "-name",
            host.name,
            *_vm_machine(VM_MEMORY_MB),
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            cmdline,
            "-drive",
            f"file={image.rootfs},if=virtio,format=raw,snapshot=on",
            "-netdev",
            f"tap,id=n0,ifname={_tap(octet)},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,mac=52:54:00:cd:{self.net:02x}:{octet:02x}",
            "-serial",
            f"file:{host.dir / 'console.log'}",
            *_vm_disks(
                [(d, host.dir / "disks" / f"{d.name}.img") for d in host.spec.disks if d.kind == "flash"],
                [(d, host.dir / "disks" / f"{d.name}.img") for d in host.spec.disks if d.kind == "hdd"],
            ),
        ]
        log = open(host.dir / "qemu.log", "wb")  # noqa: SIM115 - handed to the child
        # TMPDIR: where -snapshot keeps the root disk's writes, removed with the host's directory
        host.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(host.dir)},
        )
        log.close()
        self._record("vms", {"pid": host.proc.pid, "start": _start_time(host.proc.pid), "host": host.name})

    def _vm_ready(self, host: Host) -> None:
        """Once a VM answers: its disks by serial number under the names its kernel gave them
        (nvme0n1, sda, …), each of the kind asked for, and /etc/hosts as the containers have it."""
        found = _guest_disks(host, [d.name for d in host.spec.disks])
        for disk in host.spec.disks:
            d = found[disk.name]
            rotational = d["rota"] in (True, "1", 1)
            want = ("nvme", False) if disk.kind == "flash" else ("sata", True)
            if (d.get("tran"), rotational) != want:
                raise LabError(f"{host.name}: {disk.name} is {d}, expected transport/rotational {want}")
            host.disks[disk.name] = f"/dev/{d['name']}"
        host.ssh(f"cat > /etc/hosts <<'EOF'\n{self._etc_hosts(host)}EOF")

    def _boot(self, host: Host) -> None:
        cmd = [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(host.root),
            f"--machine={host.netns}",
            "--register=no",
            "--keep-unit",
            f"--network-namespace-path=/run/netns/{host.netns}",
            "--console=pipe",
            # systemd raises its hard open-file limit to the kernel's maximum on a real machine;
            # give the container's the same room, whatever the shell that started the lab had.
            f"--rlimit=NOFILE=65536:{_nr_open()}",
            *[f"--bind={dev}" for dev in host.disks.values()],
            "--boot",
        ]
        log = open(host.dir / "console.log", "wb")  # noqa: SIM115 - handed to the child
        host.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._record("procs", {"pid": host.proc.pid, "start": _start_time(host.proc.pid), "host": host.name})

    def _wait_ready(self, host: Host, deadline: float) -> None:
        """Until sshd answers and systemd has finished booting (running or degraded)."""
        last = ""
        while time.monotonic() < deadline:
            if host.proc is not None and host.proc.poll() is not None:
                what = "qemu" if host.vm else "systemd-nspawn"
                raise LabError(
                    f"{host.name}: {what} exited {host.proc.returncode}; "
                    f"see {host.dir / 'console.log'}" + (f" and {host.dir / 'qemu.log'}" if host.vm else "")
                )
            try:
                with socket.create_connection((host.address, 22), timeout=1):
                    pass
            except OSError as exc:
                last = str(exc)
                time.sleep(0.5)
                continue
            try:
                proc = host.ssh("systemctl is-system-running --wait", check=False, timeout=60)
            except subprocess.TimeoutExpired:
                last = "systemctl is-system-running timed out"
                continue
            state = proc.stdout.strip()
            if state in ("running", "degraded") and host.vm:
                self._vm_ready(host)
                return
            if state in ("running", "degraded"):
                # nspawn leaves /proc/sys read-only; a machine with its own network stack can set
                # its net.* keys, and so can this host: the namespace is its own.
                host.ssh(
                    "mountpoint -q /proc/sys/net || (mount --bind /proc/sys/net /proc/sys/net"
                    " && mount -o remount,bind,rw /proc/sys/net)"
                )
                return
            last = f"systemd state {state!r} {proc.stderr.strip()}"
            time.sleep(1)
        raise LabError(f"{host.name} ({host.address}) not ready: {last}; see {host.dir / 'console.log'}")

    # -- reuse and extra namespaces -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``reattach`` needs to drive these hosts from another process."""
        return {
            name: {
                "address": h.address,
                "netns": h.netns,
                "dir": str(h.dir),
                "disks": h.disks,
                "groups": list(h.spec.groups),
                "vars": dict(h.spec.vars),
                "pid": h.proc.pid if h.proc else None,
                "vm": h.vm,
            }
            for name, h in self.hosts.items()
        }

    def running(self) -> bool:
        """True if this workdir's lab (per its state file) has every container still alive."""
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return False
        procs = state.get("procs", []) + state.get("vms", [])
        return bool(procs) and all(_alive(p["pid"], p["start"]) for p in procs)

    def reattach(self, described: Mapping[str, Mapping[str, Any]]) -> dict[str, Host]:
        """Take over a running lab started by another process (from ``describe``'s record and the
        state file), so it can be driven and torn down from here."""
        if not self.running():
            raise LabError(f"no running lab in {self.workdir}")
        self._state = json.loads(self._state_file.read_text())
        for name, d in described.items():
            spec = HostSpec(
                name, groups=tuple(d["groups"]), vars=dict(d.get("vars", {})), vm=bool(d.get("vm"))
            )
            self.hosts[name] = Host(
                spec=spec,
                address=d["address"],
                netns=d["netns"],
                dir=Path(d["dir"]),
                ssh_base=["ssh", "-i", str(self.key), *self.ssh_options()],
                disks=dict(d.get("disks", {})),
            )
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for host in self.hosts.values():
            if host.vm:  # under the names its kernel gives them now (a PCI rescan renames a disk)
                found = _guest_disks(host, list(host.disks))
                host.disks = {name: f"/dev/{d['name']}" for name, d in found.items()}
        return self.hosts

    def add_client(self, name: str, address: str, prefix_len: int = 24) -> str:
        """A client network namespace (no container) on the lab's bridge with ADDRESS, which may be
        outside the lab's /24: it reaches the lab network on-link, and every host gets an on-link
        route back. Returns the namespace's name; ``down`` removes it."""
        ns = f"{self.prefix}-{name}"
        _run(["ip", "netns", "add", ns])
        self._record("netns", ns)
        port = f"c{name}"[:15]
        _run(
            [
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.switch_netns,
            ]
        )
        _run(["ip", "-n", self.switch_netns, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "route", "add", f"10.203.{self.net}.0/24", "dev", "eth0"])
        for host in self.hosts.values():
            if host.vm:
                host.ssh(f"ip route replace {address}/32 dev eth0")
            else:
                _run(["ip", "-n", host.netns, "route", "replace", f"{address}/32", "dev", "eth0"])
        _run(["ip", "route", "replace", f"{address}/32", "dev", self.controller_link])
        return ns

    # -- inventory ------------------------------------------------------------------------------

    def write_inventory(
        self,
        path: Path | None = None,
        *,
        all_vars: Mapping[str, Any] | None = None,
        group_vars: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Path:
        """An Ansible inventory (YAML) of the hosts: each in its groups with its vars, SSH through
        the lab key. Usable by ansible-playbook and by testinfra (--ansible-inventory)."""
        path = Path(path) if path else self.workdir / "inventory.yml"
        groups: dict[str, dict[str, Any]] = {}
        for host in self.hosts.values():
            for g in host.spec.groups or ("ungrouped",):
                groups.setdefault(g, {"hosts": {}})["hosts"][host.name] = {
                    "ansible_host": host.address,
                    **({"lab_disks": host.disks} if host.disks else {}),
                    **dict(host.spec.vars),
                }
        for g, gv in (group_vars or {}).items():
            groups.setdefault(g, {"hosts": {}})["vars"] = dict(gv)
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": " ".join(self.ssh_options()),
                    "lab_controller_address": self.controller_address,
                    **dict(all_vars or {}),
                },
                "children": groups,
            }
        }
        # JSON is YAML: no YAML library needed, and the file reads back exactly.
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    # -- tear down ------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every host and remove everything the lab made. Safe to call twice."""
        Lab.cleanup(self.workdir)
        for host in self.hosts.values():
            host.proc = None
        self.hosts.clear()
        self._state = {}

    @staticmethod
    def cleanup(workdir: Path) -> None:
        """Remove what a lab in WORKDIR left behind (per its state file): SSH masters, containers,
        overlay mounts, loop devices, namespaces and links, and the nspawn runtime tmpfs if this
        lab mounted it and no other container runs."""
        workdir = Path(workdir).resolve()
        state_file = workdir / "lab-state.json"
        if not state_file.exists():
            return
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            state = {}
        errors: list[str] = []
        for runtime in state.get("runtime_dir", []):
            for sock in sorted(Path(runtime).glob("cp-*")):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    _run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"], check=False, timeout=10)
                sock.unlink(missing_ok=True)
        _stop_containers(state.get("procs", []), errors)
        _stop_vms(state.get("vms", []), errors)
        for tap in state.get("taps", []):
            sw = f"{state.get('prefix', '')}-sw"
            if Path(f"/run/netns/{sw}").exists():
                _run(["ip", "-n", sw, "link", "del", tap], check=False)
        for mount in state.get("mounts", []):
            _umount(Path(mount), errors)
        for loop in state.get("loops", []):
            _detach_loop(loop["device"], loop["file"], errors)
        for image in state.get("vm_images", []):
            Path(image).unlink(missing_ok=True)
        for ns in reversed(state.get("netns", [])):
            if Path(f"/run/netns/{ns}").exists():
                proc = _run(["ip", "netns", "del", ns], check=False)
                if proc.returncode != 0:
                    errors.append(f"ip netns del {ns}: {proc.stderr.strip()}")
        for link in state.get("links", []):
            # the peer went with its namespace, but the kernel reaps namespaces asynchronously
            for _ in range(50):
                if not Path(f"/sys/class/net/{link}").exists():
                    break
                _run(["ip", "link", "del", link], check=False)
                time.sleep(0.1)
            else:
                errors.append(f"link {link} still present")
        for runtime in state.get("runtime_dir", []):
            with contextlib.suppress(OSError):
                Path(runtime).rmdir()
        for tmpfs in state.get("nspawn_tmpfs", []):
            if not _nspawn_running() and _is_mount(Path(tmpfs)):
                _run(["umount", tmpfs], check=False)
        if errors:
            raise LabError("lab cleanup incomplete: " + "; ".join(errors))
        state_file.unlink(missing_ok=True)


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1048576


def _nspawn_running() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "systemd-nspawn":
                return True
    return False


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _stop_containers(procs: list[dict[str, Any]], errors: list[str]) -> None:
    """SIGTERM each systemd-nspawn (the container halts cleanly), then SIGKILL what is left:
    the container's init (which takes its whole PID namespace with it) and nspawn itself."""
    live = [(p["pid"], p["start"]) for p in procs if _alive(p["pid"], p["start"])]
    leaders = {pid: [(c, _start_time(c)) for c in _children(pid)] for pid, _ in live}
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in live):
        _reap(live)
        time.sleep(0.2)
    for pid, start in live:
        if not _alive(pid, start):
            continue
        for child, cstart in leaders.get(pid, []):
            if _alive(child, cstart):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in live):
        _reap(live)
        time.sleep(0.1)
    errors += [f"systemd-nspawn {p} did not exit" for p, s in live if _alive(p, s)]


def _guest_disks(host: Host, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """NAMES (the lab's disk names) → lsblk's entry for the VM disk with that serial number."""
    found = json.loads(host.ssh("lsblk --json --nodeps -o NAME,SERIAL,ROTA,TRAN").stdout)
    by_serial = {str(d.get("serial") or "").strip(): d for d in found.get("blockdevices", [])}
    out = {}
    for name in names:
        serial = _serial(DiskSpec(name))
        if serial not in by_serial:
            raise LabError(f"{host.name}: no disk with serial {serial} in the VM: {found}")
        out[name] = by_serial[serial]
    return out


def _stop_vms(vms: list[dict[str, Any]], errors: list[str]) -> None:
    """SIGTERM each qemu (the guest's power is cut: its disks are thrown away anyway), SIGKILL
    what is left after 20 s."""
    live = [(p["pid"], p["start"]) for p in vms if _alive(p["pid"], p["start"])]
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        for pid, start in live:
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in live):
            _reap(live)
            time.sleep(0.2)
    errors += [f"qemu {p} did not exit" for p, s in live if _alive(p, s)]


def _reap(live: list[tuple[int, str | None]]) -> None:
    for pid, _ in live:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _umount(path: Path, errors: list[str]) -> None:
    for _ in range(20):
        if not _is_mount(path):
            return
        if _run(["umount", str(path)], check=False).returncode == 0:
            return
        time.sleep(0.25)
    errors.append(f"{path} is still mounted")


def _detach_loop(device: str, image: str, errors: list[str]) -> None:
    backing = Path(f"/sys/block/{Path(device).name}/loop/backing_file")
    try:
        current = backing.read_text().strip()
    except OSError:
        return  # already detached
    if os.path.realpath(current.removesuffix(" (deleted)")) != os.path.realpath(image):
        return  # reused by someone else since
    for _ in range(20):
        if _run(["losetup", "-d", device], check=False).returncode == 0:
            return
        time.sleep(0.25)
    errors.append(f"loop device {device} ({image}) could not be detached")


# -- qemu virtual machines (real device names: NVMe and SATA) ---------------------------------------

VM_PACKAGES = ("linux-image-amd64", "initramfs-tools")
# Bump when the VM image recipe below changes.
_VM_RECIPE = "2"
VM_MEMORY_MB = 2048
_VM_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
# Run before networkd and sshd: a lab VM's address and the lab's SSH key come on the kernel
# command line (cdnlab.net=ADDR/LEN, cdnlab.key=BASE64), so one image serves every VM. Without
# them the image keeps its user-network address (20-qemu.network, which 10-cdnlab sorts before).
_VM_BOOT_SCRIPT = """#!/bin/sh
set -e
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        cdnlab.net=*) net="${arg#cdnlab.net=}" ;;
        cdnlab.key=*) key="${arg#cdnlab.key=}" ;;
    esac
done
if [ -n "$net" ]; then
    mkdir -p /run/systemd/network
    printf '[Match]\\nName=eth0\\n\\n[Network]\\nAddress=%s\\n' "$net" \\
        > /run/systemd/network/10-cdnlab.network
fi
if [ -n "$key" ]; then
    echo "$key" | base64 -d >> /root/.ssh/authorized_keys
    echo >> /root/.ssh/authorized_keys
fi
"""
_VM_BOOT_UNIT = """[Unit]
Description=cdnlab: address and SSH key from the kernel command line
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cdnlab-vm-boot

[Install]
WantedBy=sysinit.target
"""


def ensure_qemu(progress: Progress = _quiet) -> None:
    """qemu-system-x86 installed with apt-get if missing: only VMs need it, so it is not among
    the Makefile's DEBIAN_PACKAGES (a few hundred MB every machine would pay for)."""
    if shutil.which("qemu-system-x86_64"):
        return
    if os.geteuid() != 0:
        raise LabError("qemu-system-x86_64 is not installed (Debian package qemu-system-x86; needs root)")
    progress("installing qemu-system-x86 with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"],
    ):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=1200, env=env, check=False)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    if not shutil.which("qemu-system-x86_64"):
        raise LabError("qemu-system-x86 installed, but qemu-system-x86_64 is not on PATH")


def _tap(octet: int) -> str:
    return f"vm{octet}"


def _serial(disk: DiskSpec) -> str:
    """The serial number the VM's disk reports (how the lab finds the name the kernel gave it)."""
    return f"cdnlab-{disk.name}"[:20]


def _vm_machine(memory_mb: int) -> list[str]:
    # TCG: /dev/kvm opens here but a KVM guest stalls after the kernel starts (DESIGN.md)
    return [
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        str(memory_mb),
        "-device",
        "ahci,id=ahci",
        "-display",
        "none",
        "-monitor",
        "none",
    ]


def _vm_disks(flash: Sequence[tuple[DiskSpec, Path]], hdd: Sequence[tuple[DiskSpec, Path]]) -> list[str]:
    """Flash disks as NVMe controllers, HDDs as 7200 rpm SATA disks on the AHCI controller."""
    args: list[str] = []
    for i, (disk, img) in enumerate(flash):
        args += [
            "-drive",
            f"file={img},if=none,id=nv{i},format=raw",
            "-device",
            f"nvme,drive=nv{i},serial={_serial(disk)}",
        ]
    if len(hdd) > 6:
        raise ValueError("at most 6 HDDs per VM (the AHCI controller's ports)")
    for i, (disk, img) in enumerate(hdd):
        args += [
            "-drive",
            f"file={img},if=none,id=hd{i},format=raw",
            "-device",
            f"ide-hd,drive=hd{i},bus=ahci.{i},rotation_rate=7200,serial={_serial(disk)}",
        ]
    return args


@dataclass(frozen=True)
class VmImage:
    kernel: Path
    initrd: Path
    rootfs: Path  # a raw ext4 image of the whole root filesystem (booted with -snapshot)
    key: Path  # the SSH private key whose public half is root's authorized_keys


def ensure_vm_image(cache_dir: Path = CACHE_DIR, *, progress: Progress = _quiet) -> VmImage:
    """A bootable image made from the cached root filesystem plus Debian's kernel, with
    systemd-networkd on qemu's user network and an SSH key for root, or (a lab VM) the address and
    key given on the kernel command line. Built once (a few minutes)."""
    base = ensure_rootfs(cache_dir, progress=progress)
    target = Path(cache_dir) / f"vm-{rootfs_key()}-{_VM_RECIPE}"
    image = VmImage(target / "vmlinuz", target / "initrd.img", target / "rootfs.img", target / "id_ed25519")
    ok = target / ".cdnlab-vm-ok"
    if ok.exists():
        return image
    with _locked(Path(cache_dir) / f"{target.name}.lock"):
        if ok.exists():
            return image
        shutil.rmtree(target, ignore_errors=True)
        tree = Path(cache_dir) / f"{target.name}.tree"
        shutil.rmtree(tree, ignore_errors=True)
        target.mkdir(parents=True)
        progress(f"building the VM image in {target} (once)")
        _run(["cp", "-a", "--reflink=auto", str(base), str(tree)], timeout=900)
        Lab._ensure_nspawn_runtime_static()
        proc = subprocess.run(
            [
                "systemd-nspawn",
                "--quiet",
                "-D",
                str(tree),
                "--register=no",
                "--keep-unit",
                "--pipe",
                "sh",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                f"--no-install-recommends {' '.join(VM_PACKAGES)} && apt-get clean",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"installing the kernel into the VM image failed: {proc.stderr[-2000:]}")
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((tree / "boot").glob("initrd.img-*"))[-1]
        shutil.copy2(vmlinuz, image.kernel)
        shutil.copy2(initrd, image.initrd)
        (tree / "etc/hostname").write_text("vm\n")
        (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
        net = tree / "etc/systemd/network/20-qemu.network"
        net.parent.mkdir(parents=True, exist_ok=True)
        net.write_text("[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n")
        _run(["systemctl", f"--root={tree}", "enable", "systemd-networkd.service"], check=False)
        script = tree / "usr/local/sbin/cdnlab-vm-boot"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_VM_BOOT_SCRIPT)
        script.chmod(0o755)
        (tree / "etc/systemd/system/cdnlab-vm-boot.service").write_text(_VM_BOOT_UNIT)
        _run(["systemctl", f"--root={tree}", "enable", "cdnlab-vm-boot.service"])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cdnlab-vm", "-f", str(image.key)])
        ssh_dir = tree / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(image.key.with_suffix(".pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(tree), str(image.rootfs), "4G"], timeout=900)
        shutil.rmtree(tree, ignore_errors=True)
        ok.write_text("ok\n")
    return image


@dataclass
class Vm:
    """A qemu guest (software emulation) booted from a VmImage with NVMe and SATA disks; SSH on a
    loopback port. Use as a context manager; the guest has no network beyond that port."""

    image: VmImage
    workdir: Path
    nvme: Sequence[int | str] = ("2G",)
    sata_hdd: Sequence[int | str] = ("3G",)
    memory_mb: int = 2048
    ssh_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    disks: dict[str, Path] = field(default_factory=dict)

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ssh_base(self) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.image.key),
            "-p",
            str(self.ssh_port),
            *SSH_OPTIONS,
        ]

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.ssh_base(), "root@127.0.0.1", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise LabError(f"vm: `{command}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def start(self, boot_timeout: float = 600) -> None:
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise LabError("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.ssh_port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ssh_port = int(s.getsockname()[1])
        flash = [
            (DiskSpec(f"nvme{i}", size), self._disk(f"nvme{i}", size)) for i, size in enumerate(self.nvme)
        ]
        hdd = [
            (DiskSpec(f"hdd{i}", size, "hdd"), self._disk(f"hdd{i}", size))
            for i, size in enumerate(self.sata_hdd)
        ]
        args = [
            qemu,
            *_vm_machine(self.memory_mb),
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            _VM_CMDLINE,
            "-drive",
            f"file={self.image.rootfs},if=virtio,format=raw,snapshot=on",
            "-netdev",
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-serial",
            f"file:{self.workdir / 'console.log'}",
            *_vm_disks(flash, hdd),
        ]
        log = open(self.workdir / "qemu.log", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + boot_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"qemu exited {self.proc.returncode}; see {self.workdir / 'qemu.log'}")
            try:
                if self.ssh(
                    "systemctl is-system-running --wait", check=False, timeout=120
                ).stdout.strip() in (
                    "running",
                    "degraded",
                ):
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(5)
        self.stop()
        raise LabError(
            f"the VM did not answer SSH in {boot_timeout:.0f}s; see {self.workdir / 'console.log'}"
        )

    def _disk(self, name: str, size: int | str) -> Path:
        path = self.workdir / f"{name}.img"
        with open(path, "wb") as f:
            f.truncate(DiskSpec(name, size).size_bytes())
        self.disks[name] = path
        return path

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.ssh("systemctl poweroff", check=False, timeout=15)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
