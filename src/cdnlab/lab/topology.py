"""Who is in the host lab: appliance hosts per site, a shield, a control host, client prefixes per
site, and the Ansible variables that make site.yml build exactly that CDN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdnlab.lab.hosts import DiskSpec, HostSpec

KEY_ID, KEY = "lab1", "lab-signing-key-not-secret"
PURGE_TOKEN = "lab-purge-token"
# The emulator's made-up credentials: its account follows the key, so every part uses this one.
AWS_REGION, AWS_KEY = "us-east-1", "test"
EDGE_PORT, ADMIN_PORT, CONTROL_PORT, PROMETHEUS_PORT = 80, 8081, 8900, 9090
ORIGIN_PORT = 4566  # the emulator as the hosts see it (controller side of the bridge)
SITES = "abcdefgh"
# Each site in another metro, 1,000 km and more apart (Frankfurt, New York, Tokyo, São Paulo,
# Sydney, Johannesburg, Mumbai, Chicago): the distance part of the steering score (0.4 x
# (100 - km/100)) then outweighs any load or poll-time difference, as between real PoPs. Sites 1°
# apart (135 km, 0.5 points) sent a site's clients elsewhere whenever its appliance's health poll
# was 18 ms slower than the other site's.
SITE_METROS = [
    (50.11, 8.68),
    (40.71, -74.01),
    (35.68, 139.69),
    (-23.55, -46.63),
    (-33.87, 151.21),
    (-26.20, 28.05),
    (19.08, 72.88),
    (41.88, -87.63),
]


def site_coordinates(i: int) -> dict[str, float]:
    """Coverage-zone coordinates of the I-th site (see SITE_METROS)."""
    lat, lon = SITE_METROS[i]
    return {"latitude": lat, "longitude": lon}


@dataclass(frozen=True)
class Topology:
    sites: int = 2
    per_site: int = 2
    net: int = 50
    # the edge appliances: "nspawn" containers, or "vm" (qemu VMs with NVMe and SATA disks); the
    # shield and the control host are containers either way
    hosts: str = "nspawn"

    def __post_init__(self) -> None:
        if self.hosts not in ("nspawn", "vm"):
            raise ValueError(f"hosts must be nspawn or vm, not {self.hosts!r}")
        if not 0 <= self.net <= 255:
            raise ValueError("--net must be 0..255 (the third octet of 10.203.NET.0/24)")
        if not 1 <= self.sites <= len(SITES):
            raise ValueError(f"--sites must be 1..{len(SITES)}")
        if not 1 <= self.per_site <= 8:
            raise ValueError("--appliances-per-site must be 1..8")

    @property
    def site_names(self) -> list[str]:
        return [f"site-{SITES[i]}" for i in range(self.sites)]

    def appliances(self) -> list[tuple[str, str]]:
        """(host name, site) of every edge appliance."""
        return [
            (f"oca-{SITES[s]}{i + 1}", f"site-{SITES[s]}")
            for s in range(self.sites)
            for i in range(self.per_site)
        ]

    def client_address(self, site_index: int) -> str:
        """A client in site I's prefix: 10.(211+I).NET.10, outside the hosts' /24."""
        return f"10.{211 + site_index}.{self.net}.10"

    def client_prefix(self, site_index: int) -> str:
        return f"10.{211 + site_index}.{self.net}.0/24"

    def specs(self) -> list[HostSpec]:
        disks = (DiskSpec("nvme0", "1G", "flash"), DiskSpec("hdd0", "2G", "hdd"))
        out = [
            HostSpec("ctl1", groups=("control", "monitoring")),
            HostSpec("shield1", groups=("appliances", "shields"), disks=(DiskSpec("nvme0", "1G", "flash"),)),
        ]
        out += [
            HostSpec(name, groups=("appliances", "edges"), disks=disks, vm=self.hosts == "vm")
            for name, _ in self.appliances()
        ]
        return out


def inventory_vars(
    topo: Topology,
    lab: Any,
    *,
    origin_url: str,
    aws_endpoint: str,
    distribution_id: str,
    repo: Path,
    wheelhouse: Path,
    build_dir: Path,
    catalog: Path,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(group vars, per-host vars) for write_inventory and the per-host update."""
    ctl = lab.hosts["ctl1"]
    shield = lab.hosts["shield1"]
    common = {
        "cdnlab_package_source": str(repo),
        "cdnlab_package_build_dir": str(build_dir),
        "cdnlab_package_wheelhouse": str(wheelhouse),
    }
    group_vars: dict[str, dict[str, Any]] = {
        "appliances": {
            **common,
            "cdnlab_delivery_workers": 1,
            "cdnlab_delivery_ram_tier_size": "32M",
            "cdnlab_delivery_signing_keys": {KEY_ID: KEY},
            "cdnlab_delivery_purge_token": PURGE_TOKEN,
            "cdnlab_delivery_drain_timeout": 30,
            "cdnlab_delivery_limits": {"drain_timeout": 10.0},
            "cdnlab_testinfra_object": "/content/t0001/240p/seg-00001.m4s",
        },
        "control": {
            **common,
            "cdnlab_control_signing_kid": KEY_ID,
            "cdnlab_control_signing_key": KEY,
            "cdnlab_control_health": {"interval": "1s", "timeout": "1s"},
            "cdnlab_control_default_site": topo.site_names[0],
            "cdnlab_control_catalog_src": str(catalog),
            "cdnlab_control_invalidation": {
                "purge_token": PURGE_TOKEN,
                "batch_delay": "1s",
                "retry_base": "0.5s",
                "cloudfront_distribution_id": distribution_id,
            },
            # CloudFront invalidations go to the emulator, through the forwarder on the bridge;
            # the same made-up credentials the cloud tier was applied with (one emulator account).
            "cdnlab_control_aws_endpoint_url": aws_endpoint,
            "cdnlab_control_aws_region": AWS_REGION,
            "cdnlab_control_aws_access_key_id": AWS_KEY,
            "cdnlab_control_aws_secret_access_key": AWS_KEY,
            "cdnlab_control_coverage_zones": {
                site: {
                    "network": [topo.client_prefix(i)],
                    "coordinates": site_coordinates(i),
                }
                for i, site in enumerate(topo.site_names)
            },
        },
        "monitoring": {
            "prometheus_scrape_interval": "5s",
            "prometheus_evaluation_interval": "5s",
            "prometheus_rules_files": [str(repo / "monitoring/prometheus/cdnlab-alerts.yml")],
        },
    }
    host_vars: dict[str, dict[str, Any]] = {
        "shield1": {
            "cdnlab_delivery_role": "shield",
            "cdnlab_delivery_site": "shield",
            "cdnlab_delivery_upstreams": [origin_url],
            "cdnlab_delivery_admin_address": shield.address,
            "cdnlab_delivery_signing_required": False,
            "appliance_storage_flash_disks": [{"device": shield.disks["nvme0"]}],
        }
    }
    for name, site in topo.appliances():
        host = lab.hosts[name]
        host_vars[name] = {
            "cdnlab_delivery_site": site,
            "cdnlab_delivery_upstreams": [f"http://{shield.address}", origin_url],
            "cdnlab_delivery_admin_address": host.address,
            "cdnlab_delivery_control_url": f"http://{ctl.address}:{CONTROL_PORT}",
            "appliance_storage_flash_disks": [{"device": host.disks["nvme0"]}],
            "appliance_storage_hdd_disks": [{"device": host.disks["hdd0"]}],
        }
    return group_vars, host_vars
