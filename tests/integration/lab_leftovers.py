"""What a host lab may leave behind after `cdnlab lab down`: its namespaces and links, loop
devices and mounts of its work directory, processes (containers, qemu) naming it, VM taps and
disk images."""

from __future__ import annotations

import subprocess
from pathlib import Path


def leftovers(workdir: Path, prefix: str) -> list[str]:
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [f"netns {line}" for line in netns.splitlines() if line.startswith(f"{prefix}-")]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    out += [f"loop {line}" for line in loops.splitlines() if str(workdir) in line]
    out += [
        f"mount {line}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(workdir) in line
    ]
    out += [f"link {p.name}" for p in Path("/sys/class/net").glob(f"{prefix}-*")]
    # a tap left in the root namespace (the lab makes them in its switch namespace, gone above)
    out += [f"tap {p.name}" for p in Path("/sys/class/net").glob("vm*") if (p / "tun_flags").exists()]
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in cmd:
            out.append(f"process {proc.parent.name}: {cmd[:120]}")
    if workdir.exists():
        out += [f"disk image {p}" for p in workdir.rglob("*.img")]
    return out
