"""appliance_storage: one filesystem per disk, mounted by label with noatime, nothing foreign
formatted, scheduler and read-ahead per kind."""

from __future__ import annotations

from typing import Any

import pytest
from infra_lib import (
    LABEL,
    edge_config_path,
    in_container,
    inventory_vars,
    mounts,
    read_toml,
    require_group,
    system,
)

DEFAULT_IO = {
    "flash": {"scheduler": "none", "read_ahead_kb": 256},
    "hdd": {"scheduler": "mq-deadline", "read_ahead_kb": 4096},
}


@pytest.fixture(autouse=True)
def _appliances(host: Any) -> None:
    require_group(host, "appliances")


def prefix(host: Any) -> str:
    return str(inventory_vars(host).get("appliance_storage_label_prefix", "cdnlab-"))


def mount_root(host: Any) -> str:
    return str(inventory_vars(host).get("appliance_storage_mount_root", "/srv/cdnlab"))


def cache_mounts(host: Any) -> dict[str, dict[str, str]]:
    """The mounted cache disks: mount point → mount, for every filesystem labelled PREFIX[fh]N."""
    p = prefix(host)
    return {t: m for t, m in mounts(host).items() if m["label"].startswith(p) and LABEL.match(m["label"])}


def slots(host: Any) -> list[tuple[str, int, dict[str, Any]]]:
    inv = inventory_vars(host)
    out = []
    for kind in ("flash", "hdd"):
        for pos, item in enumerate(inv.get(f"appliance_storage_{kind}_disks") or []):
            out.append((kind, int(item.get("index", pos)), item))
    return out


def probe(host: Any, device: str) -> dict[str, str]:
    """What the disk holds now: exists, size, TYPE and LABEL (Linux blkid)."""
    if not host.file(device).exists:
        return {"exists": ""}
    real = host.check_output(f"readlink -f {device}")
    size = host.run(f"blockdev --getsize64 {real}").stdout.strip() or "0"
    info = {"exists": "1", "size": size, "device": real}
    out = host.run(f"blkid -p -o export {real}")
    for line in out.stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            info[k] = v
    return info


def test_each_cache_mount_is_at_its_slot_by_label_with_noatime(host: Any) -> None:
    found = cache_mounts(host)
    assert found, "no cache disk is mounted"
    fstype = inventory_vars(host).get(
        "appliance_storage_fstype", "ufs" if system(host) == "FreeBSD" else "xfs"
    )
    for target, m in found.items():
        g = LABEL.match(m["label"])
        assert g is not None
        kind = {"f": "flash", "h": "hdd"}[g.group("kind")]
        assert target == f"{mount_root(host)}/{kind}/{int(g.group('index'))}", (target, m)
        assert m["fstype"] == fstype
        assert "noatime" in m["options"].split(","), m


def test_fstab_mounts_by_label(host: Any) -> None:
    if system(host) != "Linux":
        pytest.skip("Linux fstab (FreeBSD mounts /dev/ufs/LABEL, checked by the mount test)")
    entries = [line.split() for line in host.file("/etc/fstab").content_string.splitlines() if line.strip()]
    for target in cache_mounts(host):
        (entry,) = [e for e in entries if len(e) > 3 and e[1] == target]
        assert entry[0].startswith("LABEL="), entry
        assert {"noatime", "nofail"} <= set(entry[3].split(",")), entry


def test_inventory_slots_are_mounted_or_skipped_untouched(host: Any) -> None:
    """A listed disk is mounted at its slot; a missing or failed disk is skipped; a disk holding
    something else without a wipe flag is left as it was."""
    if system(host) != "Linux":
        pytest.skip("blkid probe: Linux")
    found = cache_mounts(host)
    p = prefix(host)
    for kind, index, item in slots(host):
        target = f"{mount_root(host)}/{kind}/{index}"
        label = f"{p}{kind[0]}{index}"
        if "device" not in item:
            continue
        info = probe(host, item["device"])
        if not info.get("exists") or info.get("size") == "0":
            assert target not in found, f"{item['device']} is missing or failed but {target} is mounted"
        elif info.get("LABEL") == label:
            assert target in found, f"{item['device']} carries {label} but is not mounted at {target}"
        else:
            assert not item.get("wipe"), f"{item['device']} has wipe set but holds {info}"
            assert target not in found
            assert info.get("TYPE") or info.get("PTTYPE"), f"{item['device']} was skipped yet holds nothing"


def test_edge_tiers_are_the_mounted_disks(host: Any) -> None:
    cfg = read_toml(host, edge_config_path(host))
    disk_tiers = {t["path"]: t["kind"] for t in cfg["tiers"] if t["kind"] != "ram"}
    expected = {}
    for target, m in cache_mounts(host).items():
        g = LABEL.match(m["label"])
        assert g is not None
        expected[target] = {"f": "flash", "h": "hdd"}[g.group("kind")]
    assert disk_tiers == expected


def test_udev_rule_sets_scheduler_and_read_ahead_per_kind(host: Any) -> None:
    if system(host) != "Linux":
        pytest.skip("udev: Linux")
    io = inventory_vars(host).get("appliance_storage_io") or DEFAULT_IO
    rule = host.file("/etc/udev/rules.d/65-cdnlab-disks.rules")
    assert rule.exists and rule.mode == 0o644
    text = rule.content_string
    for kind, letter in (("flash", "f"), ("hdd", "h")):
        line = next(line for line in text.splitlines() if f'=="{prefix(host)}{letter}[0-9]*"' in line)
        assert f'ATTR{{queue/scheduler}}="{io[kind]["scheduler"]}"' in line
        assert f'ATTR{{queue/read_ahead_kb}}="{io[kind]["read_ahead_kb"]}"' in line


def test_scheduler_and_read_ahead_are_live(host: Any) -> None:
    if system(host) != "Linux":
        pytest.skip("no per-disk scheduler on FreeBSD")
    if in_container(host):
        pytest.skip("no udev in a container and /sys is read-only: proven on the qemu VM")
    io = inventory_vars(host).get("appliance_storage_io") or DEFAULT_IO
    for m in cache_mounts(host).values():
        g = LABEL.match(m["label"])
        assert g is not None
        kind = {"f": "flash", "h": "hdd"}[g.group("kind")]
        name = host.check_output(f"basename $(readlink -f {m['source']})")
        sched = host.file(f"/sys/block/{name}/queue/scheduler").content_string
        assert f"[{io[kind]['scheduler']}]" in sched, (name, sched)
        ra = host.file(f"/sys/block/{name}/queue/read_ahead_kb").content_string.strip()
        assert ra == str(io[kind]["read_ahead_kb"]), (name, ra)


def test_mounted_disks_belong_to_the_service_account(host: Any) -> None:
    for target in cache_mounts(host):
        d = host.file(target)
        assert d.user == "cdnlab" and d.mode == 0o750, target
