"""The cdnlab_disks module (roles/appliance_storage/library): how it decides, per disk, to mount,
format, wipe or skip, on Linux (a fake sysfs and blkid) and on FreeBSD (fake geom, fstyp and
kern.geom.conftxt), with inventory lists and with discovery."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cdnlab_disks", REPO / "roles" / "appliance_storage" / "library" / "cdnlab_disks.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cdnlab_disks"] = mod
    spec.loader.exec_module(mod)
    return mod


disks = _load()
GIB = 1 << 30


class FakeLinux:
    """A /sys/block and /dev of files, and a blkid that answers from a table."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.dev.mkdir(parents=True)
        self.blkid: dict[str, dict[str, str]] = {}
        self.failing: set[str] = set()
        self.mountinfo = ""
        self.major = 259

    def disk(
        self,
        name: str,
        size: int = 4 * GIB,
        *,
        rotational: bool = False,
        removable: bool = False,
        serial: str | None = None,
        partitions: Sequence[str] = (),
        holders: Sequence[str] = (),
        data: bytes = b"",
        node: bool = True,
    ) -> str:
        block = self.sys / "block" / name
        (block / "queue").mkdir(parents=True)
        (block / "holders").mkdir()
        (block / "size").write_text(str(size // 512))
        (block / "queue" / "rotational").write_text("1" if rotational else "0")
        (block / "removable").write_text("1" if removable else "0")
        minor = len(list((self.sys / "block").iterdir()))
        (block / "dev").write_text(f"{self.major}:{minor * 16}")
        if serial:
            (block / "device").mkdir()
            (block / "device" / "serial").write_text(serial)
        for i, part in enumerate(partitions, 1):
            (block / part).mkdir()
            (block / part / "partition").write_text(str(i))
            (block / part / "dev").write_text(f"{self.major}:{minor * 16 + i}")
        for h in holders:
            (block / "holders" / h).mkdir()
        if node:
            (self.dev / name).write_bytes(data + b"\0" * 4096)
        return str(self.dev / name)

    def mount(self, name: str, target: str, part: str | None = None) -> None:
        num = (self.sys / "block" / name / (part or "") / "dev").read_text()
        self.mountinfo += f"36 35 {num} / {target} rw,noatime shared:1 - xfs /dev/{part or name} rw\n"

    def run(self, args: Sequence[str]) -> tuple[int, str, str]:
        assert list(args[:4]) == ["blkid", "-p", "-o", "export"], args
        dev = args[4]
        if dev in self.failing:
            return 8, "", f"{dev}: Input/output error"
        info = self.blkid.get(dev)
        if not info:
            return 2, "", ""
        return 0, "\n".join(f"{k}={v}" for k, v in {"DEVNAME": dev, **info}.items()), ""

    def probes(self) -> dict[str, Any]:
        return {
            name: disks.probe_linux(
                name,
                self.run,
                sysfs=str(self.sys),
                devdir=str(self.dev),
                runroot=str(self.sys / "run"),
                mountinfo=self.mountinfo,
                swaps="Filename Type Size Used Priority\n",
                by_id={},
            )
            for name in disks.linux_disks(str(self.sys))
        }

    def resolve(self, path: str) -> str | None:
        p = Path(path)
        return p.name if p.exists() else None

    def plan(
        self, flash: list[dict[str, Any]] | None = None, hdd: list[dict[str, Any]] | None = None, **kw: Any
    ):
        return {
            (r.kind, r.index): r
            for r in disks.plan(flash or [], hdd or [], self.probes(), resolve=self.resolve, **kw)
        }


@pytest.fixture
def linux(tmp_path: Path) -> FakeLinux:
    return FakeLinux(tmp_path)


def test_blank_disks_are_formatted_in_their_slots(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    b = linux.disk("sdb", rotational=True)
    plan = linux.plan([{"device": a}], [{"device": b}])
    f0, h0 = plan[("flash", 0)], plan[("hdd", 0)]
    assert (f0.action, f0.label, f0.mountpoint) == ("format", "cdnlab-f0", "/srv/cdnlab/flash/0")
    assert (h0.action, h0.label, h0.mountpoint) == ("format", "cdnlab-h0", "/srv/cdnlab/hdd/0")
    assert f0.size == 4 * GIB and h0.rotational is True


def test_a_disk_already_carrying_its_label_is_mounted_not_formatted(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    linux.blkid[a] = {"TYPE": "xfs", "LABEL": "cdnlab-f0"}
    assert linux.plan([{"device": a}])[("flash", 0)].action == "mount"


def test_a_disk_mounted_at_its_own_slot_is_kept(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    linux.blkid[a] = {"TYPE": "xfs", "LABEL": "cdnlab-f0"}
    linux.mount("nvme0n1", "/srv/cdnlab/flash/0")
    assert linux.plan([{"device": a}])[("flash", 0)].action == "mount"


@pytest.mark.parametrize(
    ("blkid", "extra", "reason"),
    [
        ({"TYPE": "ext4", "LABEL": "data"}, {}, "holds ext4 labelled 'data'"),
        ({"PTTYPE": "gpt"}, {"partitions": ["sdb1"]}, "holds a gpt partition table"),
        ({}, {"data": b"\x01 a database blkid does not know"}, "holds data blkid does not recognise"),
        ({"TYPE": "xfs", "LABEL": "cdnlab-f3"}, {}, "holds xfs labelled 'cdnlab-f3'"),
    ],
)
def test_a_disk_holding_anything_else_is_skipped_unless_wipe_is_set(
    linux: FakeLinux, blkid: dict[str, str], extra: dict[str, Any], reason: str
) -> None:
    a = linux.disk("sdb", **extra)
    if blkid:
        linux.blkid[a] = blkid
    skipped = linux.plan([{"device": a}])[("flash", 0)]
    assert skipped.action == "skip"
    assert reason in skipped.reason and "set wipe: true" in skipped.reason
    wiped = linux.plan([{"device": a, "wipe": True}])[("flash", 0)]
    assert wiped.action == "wipe" and reason in wiped.reason


def test_wipe_never_touches_a_disk_that_already_is_the_slots_disk(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    linux.blkid[a] = {"TYPE": "xfs", "LABEL": "cdnlab-f0"}
    assert linux.plan([{"device": a, "wipe": True}])[("flash", 0)].action == "mount"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"size": 0}, "failed: no medium"),
        ({"holders": ["dm-0"]}, "in use by dm-0"),
        ({"node": False}, "missing"),
    ],
)
def test_missing_failed_and_busy_disks_are_skipped(
    linux: FakeLinux, setup: dict[str, Any], reason: str
) -> None:
    a = linux.disk("sdc", **setup)
    got = linux.plan([{"device": a, "wipe": True}])[("flash", 0)]
    assert got.action == "skip" and reason in got.reason


def test_an_unreadable_disk_is_skipped_as_failed(linux: FakeLinux) -> None:
    a = linux.disk("sdc")
    linux.failing.add(a)
    got = linux.plan([{"device": a}])[("flash", 0)]
    assert got.action == "skip" and got.reason.startswith("failed: blkid")


def test_a_disk_mounted_elsewhere_is_skipped(linux: FakeLinux) -> None:
    a = linux.disk("sdb")
    linux.mount("sdb", "/var/lib/mysql")
    got = linux.plan([{"device": a, "wipe": True}])[("flash", 0)]
    assert got.action == "skip" and "mounted at /var/lib/mysql" in got.reason


def test_a_missing_disk_keeps_the_others_in_their_slots(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    c = linux.disk("nvme2n1")
    plan = linux.plan([{"device": a}, {"device": "/dev/disk/by-id/nvme-GONE"}, {"device": c}])
    assert [plan[("flash", i)].action for i in range(3)] == ["format", "skip", "format"]
    assert plan[("flash", 2)].label == "cdnlab-f2"


def test_disks_by_serial_and_pinned_index(linux: FakeLinux) -> None:
    linux.disk("nvme0n1", serial="S6CK0001")
    linux.disk("nvme1n1", serial="S6CK0002")
    plan = linux.plan([{"serial": "S6CK0002", "index": 5}])
    assert plan[("flash", 5)].name == "nvme1n1" and plan[("flash", 5)].requested == "serial:S6CK0002"


def test_the_same_disk_twice_is_used_once(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    plan = linux.plan([{"device": a}], [{"device": a}])
    assert plan[("flash", 0)].action == "format"
    assert plan[("hdd", 0)].action == "skip" and "same disk" in plan[("hdd", 0)].reason


@pytest.mark.parametrize(
    "items",
    [
        [{"device": "/dev/a", "serial": "x"}],
        [{}],
        [{"device": "/dev/a", "index": 1}, {"device": "/dev/b", "index": 1}],
        [{"device": "/dev/a", "wipe_all": True}],
    ],
)
def test_inventory_mistakes_are_errors(linux: FakeLinux, items: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError):
        linux.plan(items)


def test_discovery_takes_blank_whole_disks_by_kind(linux: FakeLinux) -> None:
    linux.disk("nvme0n1", serial="N0")
    linux.disk("nvme1n1", serial="N1")
    linux.disk("sda", rotational=True, partitions=["sda1", "sda2"])  # the OS disk
    linux.mount("sda", "/", part="sda2")
    linux.disk("sdb", rotational=True, serial="H1")
    linux.disk("sdc", rotational=True, serial="H2")
    hc = linux.disk("sdd", rotational=True, serial="H3")
    linux.blkid[hc] = {"TYPE": "xfs", "LABEL": "cdnlab-h4"}  # set up by an earlier run: keeps slot 4
    linux.disk("sde", rotational=True, removable=True)  # a USB stick
    linux.disk("loop0")  # excluded by name
    linux.disk("sdf", rotational=True, size=GIB // 2)  # too small
    plan = linux.plan(discover=True, discover_exclude=r"^(loop|dm-)")
    assert {k: r.name for k, r in plan.items()} == {
        ("flash", 0): "nvme0n1",
        ("flash", 1): "nvme1n1",
        ("hdd", 0): "sdb",
        ("hdd", 1): "sdc",
        ("hdd", 4): "sdd",
    }
    assert plan[("hdd", 4)].action == "mount"
    assert all(r.discovered for r in plan.values())


def test_discovery_adds_to_the_inventory_lists(linux: FakeLinux) -> None:
    a = linux.disk("nvme0n1")
    linux.disk("nvme1n1")
    plan = linux.plan([{"device": a}], discover=True, discover_exclude="^$")
    assert plan[("flash", 0)].name == "nvme0n1" and not plan[("flash", 0)].discovered
    assert plan[("flash", 1)].name == "nvme1n1" and plan[("flash", 1)].discovered


# -- FreeBSD ----------------------------------------------------------------------------------------

CONFTXT = """0 DISK nda0 3840755982336 512 hd 0 sc 0
1 LABEL diskid/DISK-S6CKNE0T100001 3840755982336 512 i 0 o 0
0 DISK nda1 3840755982336 512 hd 0 sc 0
1 LABEL ufs/cdnlab-f1 3840755982336 512 i 0 o 0
0 DISK ada0 240057409536 512 hd 16 sc 63
1 PART ada0p2 239000000000 512 i 2 o 1057280 ty freebsd-ufs xs GPT xt 516e7cb6
1 PART ada0p1 524288 512 i 1 o 20480 ty freebsd-boot xs GPT xt 83bd6b9d
0 DISK ada1 20000588955648 4096 hd 16 sc 63
0 DISK ada2 20000588955648 4096 hd 16 sc 63
1 MIRROR mirror/gm0 20000588955136 4096
0 DISK cd0 0 2048 hd 0 sc 0
"""

GEOM = {
    "nda0": {"Mediasize": "3840755982336 (3.5T)", "rotationrate": "0", "ident": "S6CKNE0T100001"},
    "nda1": {"Mediasize": "3840755982336 (3.5T)", "rotationrate": "0", "ident": "S6CKNE0T100002"},
    "ada0": {"Mediasize": "240057409536 (224G)", "rotationrate": "0", "ident": "BOOTSSD"},
    "ada1": {"Mediasize": "20000588955648 (18T)", "rotationrate": "7200", "ident": "ZR5ABC01"},
    "ada2": {"Mediasize": "20000588955648 (18T)", "rotationrate": "7200", "ident": "ZR5ABC02"},
    "cd0": {"Mediasize": "0 (0B)", "rotationrate": "unknown", "ident": "(null)"},
}
FSTYP = {"/dev/nda1": "ufs cdnlab-f1", "/dev/ada1": "ufs olddata"}
MOUNTS = "/dev/ada0p2 / ufs rw 1 1\n/dev/ufs/cdnlab-f1 /srv/cdnlab/flash/1 ufs rw,noatime 2 2\n"


def freebsd_run(args: Sequence[str]) -> tuple[int, str, str]:
    if list(args[:3]) == ["geom", "disk", "list"]:
        info = GEOM[args[3]]
        return (
            0,
            f"Geom name: {args[3]}\nProviders:\n1. Name: {args[3]}\n"
            + "".join(f"   {k}: {v}\n" for k, v in info.items()),
            "",
        )
    if args[0] == "fstyp":
        out = FSTYP.get(args[2])
        return (0, out + "\n", "") if out else (1, "", "fstyp: unknown")
    raise AssertionError(args)


def freebsd_probes() -> dict[str, Any]:
    return {
        n: disks.probe_freebsd(n, freebsd_run, conftxt=CONFTXT, mounts=MOUNTS)
        for n in ("nda0", "nda1", "ada0", "ada1", "ada2", "cd0")
    }


def test_freebsd_conftxt_tree() -> None:
    tree = disks.parse_conftxt(CONFTXT)
    assert tree["ada0"] == [("PART", "ada0p2"), ("PART", "ada0p1")]
    assert tree["ada2"] == [("MIRROR", "mirror/gm0")]


def test_freebsd_plan_from_inventory() -> None:
    probes = freebsd_probes()
    labels = {f"/dev/{p}": d for d, st in disks.parse_conftxt(CONFTXT).items() for _, p in st}

    def resolve(path: str) -> str | None:
        return labels.get(path) or (Path(path).name if Path(path).name in probes else None)

    plan = {
        (r.kind, r.index): r
        for r in disks.plan(
            [{"device": "/dev/diskid/DISK-S6CKNE0T100001"}, {"serial": "S6CKNE0T100002"}],
            [{"device": "/dev/ada1"}, {"device": "/dev/ada2", "wipe": True}, {"device": "/dev/ada0"}],
            probes,
            resolve=resolve,
            fstype="ufs",
        )
    }
    assert (
        plan[("flash", 0)].action == "format"
        and plan[("flash", 0)].by_id == "/dev/diskid/DISK-S6CKNE0T100001"
    )
    assert plan[("flash", 1)].action == "mount"  # ufs cdnlab-f1, mounted at its slot through /dev/ufs
    assert plan[("hdd", 0)].action == "skip" and "ufs labelled 'olddata'" in plan[("hdd", 0)].reason
    assert plan[("hdd", 1)].action == "skip" and "in use by MIRROR:mirror/gm0" in plan[("hdd", 1)].reason
    assert plan[("hdd", 2)].action == "skip"  # the boot disk: partitioned and mounted
    assert probes["ada1"].rotational is True and probes["nda0"].rotational is False


def test_freebsd_discovery() -> None:
    plan = disks.plan(
        [],
        [],
        freebsd_probes(),
        resolve=lambda p: None,
        discover=True,
        discover_exclude=r"^(cd|md)",
        fstype="ufs",
    )
    got = {(r.kind, r.index): (r.name, r.action) for r in plan}
    assert got[("flash", 1)] == ("nda1", "mount")
    assert got[("flash", 0)] == ("nda0", "format")
    assert got[("hdd", 0)] == ("ada1", "skip")  # holds a filesystem: discovery never takes it
    assert "ada0" not in {n for n, _ in got.values()} and "ada2" not in {n for n, _ in got.values()}
