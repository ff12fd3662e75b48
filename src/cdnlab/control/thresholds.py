"""Health thresholds written the way Traffic Monitor writes them.

Traffic Monitor's profile parameters (``health.threshold.loadavg = 25.0``,
``health.threshold.availableBandwidthInKbps = >1750000``, ``health.threshold.queryTime = 1000``)
name a measurement and its *healthy side*: a bare number or ``<N`` means the value must stay
below N, ``>N`` means it must stay above. We keep that syntax for the measurements our appliances
expose (see ``HEALTH_MEASUREMENTS``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# What a poll measures (health.py fills these in): name → meaning.
HEALTH_MEASUREMENTS: dict[str, str] = {
    "query_time_ms": "time to answer GET /healthz, in ms (Traffic Monitor's queryTime)",
    "connections": "open client connections (the appliance's load)",
    "requests_per_s": "requests per second over the last poll interval",
    "bandwidth_bps": "bits per second served over the last poll interval",
    "bandwidth_utilization": "bandwidth_bps / the appliance's capacity_bps (0–1)",
    "available_bandwidth_kbps": "capacity minus bandwidth, kbit/s (availableBandwidthInKbps)",
    "error_rate": "share of 5xx responses over the last poll interval (0–1)",
    "failed_disks": "disks the appliance reports as failed",
}


class Threshold(BaseModel):
    model_config = ConfigDict(frozen=True)

    op: Literal["<", ">"]
    value: float

    def healthy(self, measured: float) -> bool:
        return measured < self.value if self.op == "<" else measured > self.value

    def __str__(self) -> str:
        return f"{self.op}{self.value:g}"


def parse_threshold(text: str | int | float) -> Threshold:
    s = str(text).strip()
    op: Literal["<", ">"] = "<"
    if s[:1] in "<>":
        op = "<" if s[0] == "<" else ">"
        s = s[1:].strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"threshold must be N, <N or >N, got {text!r}") from None
    return Threshold(op=op, value=value)


def violations(thresholds: dict[str, Threshold], measured: dict[str, float]) -> list[str]:
    """Human lines for every threshold broken; a measurement not taken is not judged."""
    out = []
    for name, th in sorted(thresholds.items()):
        value = measured.get(name)
        if value is not None and not th.healthy(value):
            out.append(f"{name}={value:g} breaks {th}")
    return out
