"""CloudFront's tiered pricing against appliance cost (seed 003 §5.2), as pure functions.

Units are decimal, as AWS bills: 1 TB = 1,000 GB, 1 PB = 1,000,000 GB. Transfer is priced by
tiers within a month (the first 10 TB at one rate, the next 40 TB at another, …); requests per
10,000, HTTP and HTTPS apart. The seed's worked example prices its 50 PB at the top-tier rate
alone ("50PB × $0.030"); ``transfer_cost(..., flat_marginal=True)`` reproduces that convention and
the default is the tiered sum, which differs by the $9,050 of the first 500 TB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GB_PER_TB = 1_000.0
GB_PER_PB = 1_000_000.0
HOURS_PER_MONTH = 720.0  # AWS's billing month


@dataclass(frozen=True)
class Pricing:
    # (tier size in GB, or None for "the rest"; USD per GB)
    transfer: tuple[tuple[float | None, float], ...]
    http_per_10k: float
    https_per_10k: float


# Seed 003 §5.2, "CloudFront Pricing (2026)".
CLOUDFRONT_2026 = Pricing(
    transfer=(
        (10 * GB_PER_TB, 0.085),
        (40 * GB_PER_TB, 0.080),
        (100 * GB_PER_TB, 0.060),
        (350 * GB_PER_TB, 0.040),
        (None, 0.030),
    ),
    http_per_10k=0.0075,
    https_per_10k=0.0100,
)


def transfer_cost(gb: float, pricing: Pricing = CLOUDFRONT_2026, flat_marginal: bool = False) -> float:
    """USD for ``gb`` of data transfer out in one month."""
    if gb <= 0:
        return 0.0
    if flat_marginal:
        return gb * marginal_rate(gb, pricing)
    cost, left = 0.0, gb
    for size, rate in pricing.transfer:
        take = left if size is None else min(left, size)
        cost += take * rate
        left -= take
        if left <= 0:
            break
    return cost


def marginal_rate(gb: float, pricing: Pricing = CLOUDFRONT_2026) -> float:
    """USD per GB of the tier the ``gb``-th GB falls in."""
    edge = 0.0
    for size, rate in pricing.transfer:
        if size is None or gb <= edge + size:
            return rate
        edge += size
    return pricing.transfer[-1][1]


def request_cost(requests: float, https_share: float = 1.0, pricing: Pricing = CLOUDFRONT_2026) -> float:
    per_10k = https_share * pricing.https_per_10k + (1 - https_share) * pricing.http_per_10k
    return requests / 10_000 * per_10k


@dataclass(frozen=True)
class Traffic:
    """A month of traffic: bytes as GB, requests, and the share made over HTTPS."""

    gb: float
    requests: float
    https_share: float = 1.0

    def scaled(self, share: float) -> Traffic:
        return Traffic(self.gb * share, self.requests * share, self.https_share)

    @property
    def mean_gbps(self) -> float:
        return self.gb * 8 / (HOURS_PER_MONTH * 3600)


@dataclass(frozen=True)
class CloudFrontBill:
    transfer: float
    requests: float

    @property
    def total(self) -> float:
        return self.transfer + self.requests


def cloudfront_bill(
    t: Traffic, pricing: Pricing = CLOUDFRONT_2026, flat_marginal: bool = False
) -> CloudFrontBill:
    return CloudFrontBill(
        transfer_cost(t.gb, pricing, flat_marginal), request_cost(t.requests, t.https_share, pricing)
    )


@dataclass(frozen=True)
class ApplianceCost:
    """Per appliance and year: amortised hardware and support (seed: $5K and $10M / 10K)."""

    hardware_per_year: float = 5_000.0
    support_per_year: float = 1_000.0
    sustained_gbps: float = 40.0  # seed 003 §2.1: 40-80 Gbps sustained; the low end, to be safe
    subscribers: int = 25_000  # seed 003 §2.1: one appliance per 10,000-50,000 subscribers

    @property
    def per_year(self) -> float:
        return self.hardware_per_year + self.support_per_year


def appliances_needed(served: Traffic, subscribers: int, a: ApplianceCost, peak_to_mean: float = 2.0) -> int:
    """Enough appliances for both the subscriber ratio and the peak throughput they serve."""
    by_subs = math.ceil(subscribers / a.subscribers) if subscribers else 0
    by_peak = math.ceil(served.mean_gbps * peak_to_mean / a.sustained_gbps)
    return max(by_subs, by_peak, 1)


@dataclass(frozen=True)
class Comparison:
    total: Traffic
    appliance_share: float
    appliances: int
    appliance_cost: ApplianceCost
    flat_marginal: bool = False
    pricing: Pricing = field(default=CLOUDFRONT_2026)

    @property
    def cloudfront_with(self) -> CloudFrontBill:
        """Monthly CloudFront bill for what the appliances do not serve."""
        return cloudfront_bill(self.total.scaled(1 - self.appliance_share), self.pricing, self.flat_marginal)

    @property
    def cloudfront_without(self) -> CloudFrontBill:
        """Monthly CloudFront bill if CloudFront served everything."""
        return cloudfront_bill(self.total, self.pricing, self.flat_marginal)

    @property
    def appliances_per_year(self) -> float:
        return self.appliances * self.appliance_cost.per_year

    @property
    def with_per_year(self) -> float:
        return 12 * self.cloudfront_with.total + self.appliances_per_year

    @property
    def without_per_year(self) -> float:
        return 12 * self.cloudfront_without.total

    @property
    def avoided_per_year(self) -> float:
        """The CloudFront bill the appliances avoid (what the seed calls "Net savings")."""
        return self.without_per_year - 12 * self.cloudfront_with.total

    @property
    def savings_per_year(self) -> float:
        """Avoided bill minus what the appliances cost."""
        return self.without_per_year - self.with_per_year

    @property
    def roi(self) -> float:
        """Avoided bill per dollar spent on appliances, as the seed's "ROI: 7x" (422 / 60)."""
        return self.avoided_per_year / self.appliances_per_year


def _bisect(f, lo: float, hi: float, iterations: int = 200) -> float:
    """The x in [lo, hi] where the increasing f crosses zero."""
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def break_even_share(c: Comparison) -> float:
    """The share of traffic the appliances must serve for them to pay for themselves."""
    fleet_month = c.appliances_per_year / 12
    full = c.cloudfront_without.total

    def gain(share: float) -> float:
        rest = cloudfront_bill(c.total.scaled(1 - share), c.pricing, c.flat_marginal).total
        return (full - rest) - fleet_month

    if gain(1.0) < 0:
        return math.inf  # even serving everything they cost more than CloudFront
    return _bisect(gain, 0.0, 1.0)


def break_even_gb_per_appliance(c: Comparison) -> float:
    """Monthly GB one appliance must serve so the CloudFront bill it saves equals its cost,
    at the marginal price of the fleet's traffic (the GB it takes off the top of the bill)."""
    month = c.appliance_cost.per_year / 12
    mix = c.total
    per_gb = marginal_rate(mix.gb, c.pricing) + request_cost(
        mix.requests / mix.gb, mix.https_share, c.pricing
    )
    return month / per_gb
