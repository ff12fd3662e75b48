#!/usr/bin/python
"""Plan an appliance's cache disks: which to mount, which to format, which to wipe, which to skip.

Read-only: the module looks (sysfs, blkid, the first MiB of each disk on Linux; kern.disks,
kern.geom.conftxt, geom and fstyp on FreeBSD) and returns a plan that the role's tasks carry out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

DOCUMENTATION = r"""
module: cdnlab_disks
short_description: Plan the flash and HDD cache disks of a cdnlab appliance
description:
  - Resolves the disks named in the inventory (by path, ideally a stable C(/dev/disk/by-id) link, or
    by serial number) and, with O(discover), finds further candidates as ceph-ansible does (a whole
    disk, not removable, no partitions, no holders, not mounted).
  - For each disk it decides one action - V(mount) (it already carries the expected filesystem and
    label), V(format) (blank), V(wipe) (holds something else and the inventory sets C(wipe) for it),
    or V(skip) (missing, failed, busy, or holding data without a wipe flag) - and says why.
  - It never changes anything; it supports check mode.
options:
  flash:
    description:
      - Flash disks, in slot order.
      - Each item has C(device) or C(serial), optional C(index) and C(wipe).
    type: list
    elements: dict
    default: []
  hdd:
    description: HDD disks, as O(flash).
    type: list
    elements: dict
    default: []
  discover:
    description: Also use discovered candidates (NVMe or non-rotational as flash, rotational as HDD).
    type: bool
    default: false
  discover_exclude:
    description: Kernel names never discovered (regular expression).
    type: str
    default: '^(loop|ram|zram|dm-|md|sr|fd|nbd|rbd|drbd|cd|mmcblk[0-9]+boot)'
  min_size:
    description: Smallest discovered disk considered, in bytes.
    type: int
    default: 1073741824
  fstype:
    description: Filesystem the disks carry (xfs or ext4 on Linux, ufs on FreeBSD).
    type: str
    default: xfs
  label_prefix:
    description: Filesystem labels are this prefix, C(f) or C(h), and the slot index.
    type: str
    default: cdnlab-
  mount_root:
    description: Disks mount at MOUNT_ROOT/flash/N and MOUNT_ROOT/hdd/N.
    type: path
    default: /srv/cdnlab
author: cdnlab
"""

EXAMPLES = r"""
- name: Plan the cache disks
  cdnlab_disks:
    flash:
      - device: /dev/disk/by-id/nvme-SAMSUNG_MZQL27T6HBLA-00A07_S6CKNE0T100001
      - serial: S6CKNE0T100002
        wipe: true
    discover: false
    fstype: xfs
  register: plan
"""

RETURN = r"""
disks:
  description: One entry per disk considered, with its action and reason.
  returned: always
  type: list
  elements: dict
warnings_text:
  description: The skipped disks, one line each.
  returned: always
  type: list
  elements: str
"""

Runner = Callable[[Sequence[str]], tuple[int, str, str]]
OUR_LABEL = r"^{prefix}(?P<kind>[fh])(?P<index>\d+)$"
ZERO_CHECK_BYTES = 1 << 20


@dataclass
class Probe:
    """What the OS says about one whole disk."""

    name: str  # kernel name: nvme0n1, sdb, loop3 (Linux); nda0, ada1 (FreeBSD)
    device: str  # /dev/NAME
    exists: bool = True
    size: int = 0
    rotational: bool | None = None
    removable: bool = False
    serial: str | None = None
    by_id: str | None = None
    partitions: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    mounted_at: list[str] = field(default_factory=list)
    fstype: str | None = None
    fslabel: str | None = None
    pttype: str | None = None
    unknown_data: bool = False
    error: str | None = None


@dataclass
class Planned:
    kind: str
    index: int
    label: str
    mountpoint: str
    requested: str
    device: str | None
    name: str | None
    action: str  # mount | format | wipe | skip
    reason: str
    size: int = 0
    rotational: bool | None = None
    serial: str | None = None
    by_id: str | None = None
    fstype: str | None = None
    fslabel: str | None = None
    discovered: bool = False


# -- Linux ------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _mounted_devnums(mountinfo: str) -> dict[str, list[str]]:
    """major:minor → mount points, from /proc/self/mountinfo."""
    out: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            out.setdefault(parts[2], []).append(parts[4].replace("\\040", " "))
    return out


def _by_id_links(devdir: str) -> dict[str, str]:
    """kernel name → the preferred /dev/disk/by-id link (wwn- first, then the longest name)."""
    links: dict[str, list[str]] = {}
    base = os.path.join(devdir, "disk", "by-id")
    try:
        entries = os.listdir(base)
    except OSError:
        return {}
    for entry in entries:
        target = os.path.basename(os.path.realpath(os.path.join(base, entry)))
        if "-part" in entry:
            continue
        links.setdefault(target, []).append(entry)
    best = {}
    for name, items in links.items():
        items.sort(key=lambda e: (not e.startswith("wwn-"), not e.startswith("nvme-eui"), -len(e), e))
        best[name] = os.path.join(base, items[0])
    return best


def _udev_serial(runroot: str, devnum: str) -> str | None:
    data = _read(os.path.join(runroot, "udev", "data", f"b{devnum}"))
    for line in (data or "").splitlines():
        if line.startswith("E:ID_SERIAL_SHORT="):
            return line.split("=", 1)[1]
    return None


def probe_linux(
    name: str,
    run: Runner,
    *,
    sysfs: str = "/sys",
    devdir: str = "/dev",
    runroot: str = "/run",
    mountinfo: str | None = None,
    swaps: str | None = None,
    by_id: dict[str, str] | None = None,
    zero_check: bool = True,
) -> Probe:
    block = os.path.join(sysfs, "block", name)
    probe = Probe(name=name, device=os.path.join(devdir, name))
    if not os.path.isdir(block) or not os.path.exists(probe.device):
        probe.exists = False
        return probe
    probe.size = int(_read(os.path.join(block, "size")) or 0) * 512
    rot = _read(os.path.join(block, "queue", "rotational"))
    probe.rotational = None if rot is None else rot == "1"
    probe.removable = _read(os.path.join(block, "removable")) == "1"
    devnum = _read(os.path.join(block, "dev")) or ""
    probe.serial = (
        _read(os.path.join(block, "device", "serial"))
        or _udev_serial(runroot, devnum)
        or _read(os.path.join(block, "serial"))
    ) or None
    probe.by_id = (by_id if by_id is not None else _by_id_links(devdir)).get(name)
    try:
        entries = sorted(os.listdir(block))
    except OSError:
        entries = []
    probe.partitions = [e for e in entries if os.path.exists(os.path.join(block, e, "partition"))]
    try:
        probe.holders = sorted(os.listdir(os.path.join(block, "holders")))
    except OSError:
        probe.holders = []
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo") or ""
    mounts = _mounted_devnums(mountinfo)
    nums = [devnum] + [_read(os.path.join(block, p, "dev")) or "" for p in probe.partitions]
    probe.mounted_at = sorted(mp for n in nums if n for mp in mounts.get(n, []))
    if swaps is None:
        swaps = _read("/proc/swaps") or ""
    for line in swaps.splitlines()[1:]:
        src = line.split()[0] if line.split() else ""
        if src and os.path.basename(os.path.realpath(src)).startswith(name):
            probe.mounted_at.append("[swap]")
    if probe.size == 0:
        return probe
    rc, out, err = run(["blkid", "-p", "-o", "export", probe.device])
    if rc == 0:
        info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        probe.fstype = info.get("TYPE")
        probe.fslabel = info.get("LABEL")
        probe.pttype = info.get("PTTYPE")
    elif rc != 2:  # 2: nothing found
        probe.error = f"blkid -p failed ({rc}): {err.strip()}"
        return probe
    if zero_check and not (probe.fstype or probe.pttype):
        try:
            fd = os.open(probe.device, os.O_RDONLY)
            try:
                head = os.read(fd, ZERO_CHECK_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            probe.error = f"cannot read: {exc.strerror}"
            return probe
        probe.unknown_data = any(head)
    return probe


def linux_disks(sysfs: str = "/sys") -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(sysfs, "block")))
    except OSError:
        return []


# -- FreeBSD ----------------------------------------------------------------------------------------


def parse_conftxt(text: str) -> dict[str, list[tuple[str, str]]]:
    """kern.geom.conftxt → disk name → [(class, provider)] of the geoms stacked on it."""
    tree: dict[str, list[tuple[str, str]]] = {}
    disk: str | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        level, cls, provider = parts[0], parts[1], parts[2]
        if level == "0":
            disk = provider if cls == "DISK" else None
            if disk:
                tree.setdefault(disk, [])
        elif disk is not None:
            tree[disk].append((cls, provider))
    return tree


def parse_geom_disk(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+):\s*(.*)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


def probe_freebsd(name: str, run: Runner, *, conftxt: str, mounts: str, devdir: str = "/dev") -> Probe:
    probe = Probe(name=name, device=f"{devdir}/{name}")
    tree = parse_conftxt(conftxt)
    if name not in tree:
        probe.exists = False
        return probe
    rc, out, err = run(["geom", "disk", "list", name])
    if rc != 0:
        probe.error = f"geom disk list failed: {err.strip()}"
        return probe
    info = parse_geom_disk(out)
    probe.size = int((info.get("Mediasize") or "0").split()[0])
    rate = info.get("rotationrate", "unknown")
    probe.rotational = None if rate == "unknown" else rate != "0"
    probe.serial = info.get("ident") or None
    if probe.serial and probe.serial != "(null)":
        probe.by_id = f"{devdir}/diskid/DISK-{probe.serial}"
    else:
        probe.serial = None
    stacked = tree[name]
    probe.partitions = [p for cls, p in stacked if cls == "PART"]
    if probe.partitions:
        probe.pttype = "gpart"
    probe.holders = [f"{cls}:{p}" for cls, p in stacked if cls not in ("PART", "LABEL", "DEV")]
    ours = {f"{devdir}/{p}" for _, p in stacked} | {probe.device}
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ours:
            probe.mounted_at.append(parts[1])
    if probe.size == 0:
        return probe
    rc, out, err = run(["fstyp", "-l", probe.device])
    if rc == 0 and out.strip():
        fields = out.split(None, 1)
        probe.fstype = fields[0]
        probe.fslabel = fields[1].strip() if len(fields) > 1 else None
    return probe


# -- the plan ---------------------------------------------------------------------------------------


@dataclass
class Wanted:
    kind: str
    index: int
    requested: str
    device: str | None
    serial: str | None
    wipe: bool


def _wanted(kind: str, items: list[dict[str, Any]]) -> list[Wanted]:
    out = []
    for pos, item in enumerate(items):
        unknown = set(item) - {"device", "serial", "index", "wipe", "comment"}
        if unknown:
            raise ValueError(f"{kind}[{pos}]: unknown keys {sorted(unknown)}")
        device, serial = item.get("device"), item.get("serial")
        if bool(device) == bool(serial):
            raise ValueError(f"{kind}[{pos}]: give exactly one of device or serial")
        index = int(item["index"]) if item.get("index") is not None else pos
        requested = str(device or f"serial:{serial}")
        out.append(Wanted(kind, index, requested, device, serial, bool(item.get("wipe"))))
    seen: set[int] = set()
    for w in out:
        if w.index in seen:
            raise ValueError(f"{kind}: index {w.index} is used twice")
        seen.add(w.index)
    return out


def _decide(p: Probe | None, label: str, mountpoint: str, fstype: str, wipe: bool) -> tuple[str, str]:
    if p is None or not p.exists:
        return "skip", "missing: no such device"
    if p.error:
        return "skip", f"failed: {p.error}"
    if p.size == 0:
        return "skip", "failed: no medium (size 0)"
    if p.holders:
        return "skip", f"in use by {', '.join(p.holders)}"
    ours = p.fstype == fstype and p.fslabel == label and not p.partitions
    if p.mounted_at:
        if ours and p.mounted_at == [mountpoint]:
            return "mount", "mounted"
        return "skip", f"mounted at {', '.join(p.mounted_at)}"
    if ours:
        return "mount", f"carries {fstype} labelled {label}"
    if p.fstype or p.pttype or p.partitions or p.unknown_data:
        if p.fstype:
            what = f"{p.fstype} labelled {p.fslabel!r}" if p.fslabel else p.fstype
        elif p.pttype:
            what = f"a {p.pttype} partition table"
        else:
            what = "data blkid does not recognise"

        if wipe:
            return "wipe", f"holds {what}; wipe is set"
        return "skip", f"holds {what}; set wipe: true for this disk to reuse it"
    return "format", "blank"


def plan(
    flash: list[dict[str, Any]],
    hdd: list[dict[str, Any]],
    probes: dict[str, Probe],
    *,
    resolve: Callable[[str], str | None],
    discover: bool = False,
    discover_exclude: str = "^$",
    min_size: int = 1 << 30,
    fstype: str = "xfs",
    label_prefix: str = "cdnlab-",
    mount_root: str = "/srv/cdnlab",
) -> list[Planned]:
    """PROBES: kernel name → Probe for every disk the OS lists. RESOLVE: a requested path → the
    kernel name it points at (None when the path does not exist)."""
    wanted = _wanted("flash", flash) + _wanted("hdd", hdd)
    by_serial = {p.serial: n for n, p in probes.items() if p.serial}
    result: list[Planned] = []
    used: dict[str, str] = {}

    def add(kind: str, index: int, requested: str, name: str | None, wipe: bool, discovered: bool) -> None:
        label = f"{label_prefix}{kind[0]}{index}"
        mountpoint = f"{mount_root}/{kind}/{index}"
        p = probes.get(name) if name else None
        if name and name in used:
            action, reason = "skip", f"the same disk as {used[name]}"
        else:
            action, reason = _decide(p, label, mountpoint, fstype, wipe)
            if name:
                used[name] = requested
        result.append(
            Planned(
                kind=kind,
                index=index,
                label=label,
                mountpoint=mountpoint,
                requested=requested,
                device=p.device if p and p.exists else None,
                name=name if p and p.exists else None,
                action=action,
                reason=reason,
                size=p.size if p else 0,
                rotational=p.rotational if p else None,
                serial=p.serial if p else None,
                by_id=p.by_id if p else None,
                fstype=p.fstype if p else None,
                fslabel=p.fslabel if p else None,
                discovered=discovered,
            )
        )

    for w in wanted:
        name = resolve(w.device) if w.device else by_serial.get(w.serial or "")
        add(w.kind, w.index, w.requested, name, w.wipe, False)
    if discover:
        exclude = re.compile(discover_exclude)
        taken = {k: {r.index for r in result if r.kind == k} for k in ("flash", "hdd")}
        our = re.compile(OUR_LABEL.format(prefix=re.escape(label_prefix)))
        fresh: list[tuple[str, Probe]] = []
        for name in sorted(probes, key=lambda n: (probes[n].by_id or probes[n].serial or "~", n)):
            p = probes[name]
            if name in used or exclude.search(name) or not p.exists or p.removable or p.size < min_size:
                continue
            if p.partitions or p.holders or p.error:
                continue
            kind = "flash" if name.startswith(("nvme", "nvd", "nda")) or p.rotational is False else "hdd"
            m = our.match(p.fslabel or "") if p.fstype == fstype else None
            if m and m.group("kind") == kind[0] and int(m.group("index")) not in taken[kind]:
                taken[kind].add(int(m.group("index")))
                add(kind, int(m.group("index")), f"discovered:{name}", name, False, True)
            elif p.mounted_at:
                continue
            else:
                fresh.append((kind, p))
        for kind, p in fresh:
            index = next(i for i in range(len(taken[kind]) + 1) if i not in taken[kind])
            taken[kind].add(index)
            add(kind, index, f"discovered:{p.name}", p.name, False, True)
    result.sort(key=lambda r: (r.kind != "flash", r.index))
    return result


# -- the module -------------------------------------------------------------------------------------


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "flash": {"type": "list", "elements": "dict", "default": []},
            "hdd": {"type": "list", "elements": "dict", "default": []},
            "discover": {"type": "bool", "default": False},
            "discover_exclude": {
                "type": "str",
                "default": r"^(loop|ram|zram|dm-|md|sr|fd|nbd|rbd|drbd|cd|mmcblk[0-9]+boot)",
            },
            "min_size": {"type": "int", "default": 1 << 30},
            "fstype": {"type": "str", "default": "xfs"},
            "label_prefix": {"type": "str", "default": "cdnlab-"},
            "mount_root": {"type": "path", "default": "/srv/cdnlab"},
        },
        supports_check_mode=True,
    )
    params = module.params

    def run(args: Sequence[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(list(args))
        return rc, out, err

    system = os.uname().sysname
    probes: dict[str, Probe] = {}
    if system == "FreeBSD":
        _, disks, _ = run(["sysctl", "-n", "kern.disks"])
        _, conftxt, _ = run(["sysctl", "-n", "kern.geom.conftxt"])
        _, mounts, _ = run(["mount", "-p"])
        for name in disks.split():
            probes[name] = probe_freebsd(name, run, conftxt=conftxt, mounts=mounts)
        glabels = {f"/dev/{p}": disk for disk, st in parse_conftxt(conftxt).items() for _, p in st}

        def resolve(path: str) -> str | None:
            if path in glabels:
                return glabels[path]
            name = os.path.basename(path)
            return name if name in probes else None

    else:
        mountinfo = _read("/proc/self/mountinfo") or ""
        swaps = _read("/proc/swaps") or ""
        by_id = _by_id_links("/dev")
        for name in linux_disks():
            probes[name] = probe_linux(name, run, mountinfo=mountinfo, swaps=swaps, by_id=by_id)

        def resolve(path: str) -> str | None:
            if not os.path.exists(path):
                return None
            real = os.path.realpath(path)
            name = os.path.basename(real)
            if name not in probes:
                # a partition or something else that is not a whole disk
                probes[name] = Probe(name=name, device=real, error="not a whole disk")
            return name

    try:
        result = plan(
            params["flash"],
            params["hdd"],
            probes,
            resolve=resolve,
            discover=params["discover"],
            discover_exclude=params["discover_exclude"],
            min_size=params["min_size"],
            fstype=params["fstype"],
            label_prefix=params["label_prefix"],
            mount_root=params["mount_root"],
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc))
        return
    texts = []
    for r in result:
        if r.action == "skip":
            texts.append(f"{r.kind} {r.index} ({r.requested}): skipped, {r.reason}")
            module.warn(f"cache disk {r.kind}/{r.index} ({r.requested}) skipped: {r.reason}")
        elif r.action == "wipe":
            where = f"{r.kind}/{r.index} ({r.requested}, {r.device})"
            module.warn(f"cache disk {where} will be WIPED: {r.reason}")
    module.exit_json(changed=False, disks=[asdict(r) for r in result], warnings_text=texts)


if __name__ == "__main__":
    main()
