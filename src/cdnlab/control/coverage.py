"""Client location from a coverage zone file (Apache Traffic Control's JSON format).

```json
{"coverageZones": {"site-a": {"network": ["192.0.2.0/24"], "network6": ["2001:db8::/48"],
                               "coordinates": {"latitude": 1.1, "longitude": 2.2}}}}
```

Each zone name is a site (Traffic Control's cache group). Lookup is longest-prefix match, per
address family: one dict per prefix length holding masked network → site, probed from the
longest length present down. With a handful of distinct lengths this is a few dict probes per
lookup, and loading 500,000 prefixes avoids ``ipaddress`` objects (parsed with ``socket``).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path


class CoverageZoneError(ValueError):
    pass


@dataclass(frozen=True)
class Coordinates:
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Match:
    site: str
    prefix: str


@dataclass
class _Family:
    bits: int
    # prefix length → {masked network int → site}
    tables: dict[int, dict[int, str]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # descending

    def add(self, net: int, length: int, site: str) -> None:
        table = self.tables.get(length)
        if table is None:
            table = self.tables[length] = {}
            self.lengths = sorted(self.tables, reverse=True)
        table[net] = site

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        bits = self.bits
        for length in self.lengths:
            net = (addr >> (bits - length)) << (bits - length) if length else 0
            site = self.tables[length].get(net)
            if site is not None:
                return site, net, length
        return None


def _parse_v4(text: str) -> int:
    if text.count(".") != 3:  # inet_aton would accept the short forms "10.1" and "10"
        raise OSError(text)
    return int.from_bytes(socket.inet_aton(text), "big")


def _parse_prefix(text: str, family: int) -> tuple[int, int]:
    addr, sep, length_s = text.strip().partition("/")
    bits = 32 if family == socket.AF_INET else 128
    length = int(length_s) if sep else bits
    if not 0 <= length <= bits:
        raise ValueError
    if family == socket.AF_INET:
        value = _parse_v4(addr)
    else:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
    # Host bits are ignored, as Traffic Router's net.ParseCIDR does.
    net = (value >> (bits - length)) << (bits - length) if length else 0
    return net, length


def _format(net: int, length: int, v6: bool) -> str:
    if v6:
        return f"{socket.inet_ntop(socket.AF_INET6, net.to_bytes(16, 'big'))}/{length}"
    return f"{socket.inet_ntoa(net.to_bytes(4, 'big'))}/{length}"


class CoverageZones:
    """Prefix → site with longest-prefix match for IPv4 and IPv6."""

    def __init__(self) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        self.coordinates: dict[str, Coordinates] = {}
        self.prefix_count = 0
        self.revision = ""

    @property
    def sites(self) -> set[str]:
        out: set[str] = set()
        for fam in (self._v4, self._v6):
            for table in fam.tables.values():
                out.update(table.values())
        return out

    def add(self, prefix: str, site: str) -> None:
        v6 = ":" in prefix
        try:
            net, length = _parse_prefix(prefix, socket.AF_INET6 if v6 else socket.AF_INET)
        except (OSError, ValueError):
            raise CoverageZoneError(
                f"coverageZones.{site}: not an IPv{6 if v6 else 4} prefix: {prefix!r}"
            ) from None
        (self._v6 if v6 else self._v4).add(net, length, site)
        self.prefix_count += 1

    def lookup(self, address: str) -> Match | None:
        """The site of the longest prefix holding ``address``; None if no prefix does."""
        try:
            if ":" in address:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0]), "big")
                # An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is looked up as IPv4.
                if value >> 32 == 0xFFFF:
                    return self._lookup_v4(value & 0xFFFFFFFF)
                hit = self._v6.lookup(value)
                return Match(hit[0], _format(hit[1], hit[2], True)) if hit else None
            return self._lookup_v4(int.from_bytes(socket.inet_aton(address), "big"))
        except OSError:
            return None

    def _lookup_v4(self, value: int) -> Match | None:
        hit = self._v4.lookup(value)
        return Match(hit[0], _format(hit[1], hit[2], False)) if hit else None

    @classmethod
    def from_dict(cls, data: dict) -> CoverageZones:
        zones = data.get("coverageZones") if isinstance(data, dict) else None
        if not isinstance(zones, dict):
            raise CoverageZoneError("coverageZones: required object is missing")
        czf = cls()
        czf.revision = str(data.get("revision", ""))
        for site, zone in zones.items():
            if not isinstance(zone, dict):
                raise CoverageZoneError(f"coverageZones.{site}: expected an object")
            for key in ("network", "network6"):
                prefixes = zone.get(key, [])
                if not isinstance(prefixes, list):
                    raise CoverageZoneError(f"coverageZones.{site}.{key}: expected a list of prefixes")
                for prefix in prefixes:
                    if key == "network6" and ":" not in str(prefix):
                        raise CoverageZoneError(f"coverageZones.{site}.network6: not IPv6: {prefix!r}")
                    if key == "network" and ":" in str(prefix):
                        raise CoverageZoneError(f"coverageZones.{site}.network: not IPv4: {prefix!r}")
                    czf.add(str(prefix), site)
            coords = zone.get("coordinates")
            if coords is not None:
                try:
                    czf.coordinates[site] = Coordinates(float(coords["latitude"]), float(coords["longitude"]))
                except (KeyError, TypeError, ValueError):
                    raise CoverageZoneError(
                        f"coverageZones.{site}.coordinates: needs numeric latitude and longitude"
                    ) from None
        return czf

    @classmethod
    def load(cls, path: Path) -> CoverageZones:
        try:
            data = json.loads(Path(path).read_bytes())
        except OSError as exc:
            raise CoverageZoneError(f"{path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise CoverageZoneError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_dict(data)
