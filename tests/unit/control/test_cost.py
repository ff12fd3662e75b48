"""`cdnlab cost` against seed 003 §5.2: the pricing table, the worked example and the break-even."""

from __future__ import annotations

import json
import math

import pytest

from cdnlab.cli import main
from cdnlab.control.cost import (
    GB_PER_PB,
    GB_PER_TB,
    ApplianceCost,
    Comparison,
    Traffic,
    appliances_needed,
    break_even_gb_per_appliance,
    break_even_share,
    cloudfront_bill,
    marginal_rate,
    request_cost,
    transfer_cost,
)
from cdnlab.control.cost_cli import seed_example


def test_tiers() -> None:
    assert transfer_cost(10 * GB_PER_TB) == pytest.approx(850.0)
    assert transfer_cost(50 * GB_PER_TB) == pytest.approx(850 + 3_200)
    assert transfer_cost(500 * GB_PER_TB) == pytest.approx(850 + 3_200 + 6_000 + 14_000)
    assert transfer_cost(501 * GB_PER_TB) == pytest.approx(24_050 + 30)
    assert [marginal_rate(g * GB_PER_TB) for g in (1, 10, 11, 150, 151, 500, 501)] == [
        0.085,
        0.085,
        0.080,
        0.060,
        0.040,
        0.040,
        0.030,
    ]
    assert transfer_cost(0) == 0.0
    assert request_cost(10_000, https_share=0.0) == pytest.approx(0.0075)
    assert request_cost(20_000, https_share=0.5) == pytest.approx(0.0075 + 0.0100)


def test_seed_worked_example_cloudfront_share() -> None:
    # "Data transfer: 50PB × $0.030 = $1.5M": the seed prices every GB at the top tier.
    fifty = Traffic(gb=50 * GB_PER_PB, requests=500e9, https_share=1.0)
    assert cloudfront_bill(fifty, flat_marginal=True).transfer == pytest.approx(1.5e6)
    # Tiered, the first 500 TB cost $9,050 more than at $0.030.
    assert cloudfront_bill(fifty).transfer == pytest.approx(1_509_050.0)
    # "HTTPS requests: 500B requests × $0.0100 / 10K": that is $0.5M; the seed's "$5M" would be 5T.
    assert cloudfront_bill(fifty).requests == pytest.approx(0.5e6)
    assert request_cost(5e12) == pytest.approx(5e6)


def test_seed_worked_example_fleet() -> None:
    c = seed_example()
    assert c.appliances_per_year == pytest.approx(60e6)  # "OCA Cost … Total: $60M/year"
    assert c.cloudfront_with.transfer == pytest.approx(1.5e6)
    assert 12 * c.cloudfront_with.total == pytest.approx(24e6)
    assert c.with_per_year == pytest.approx(84e6)
    assert c.without_per_year == pytest.approx(480e6)  # the seed: "$500M+"
    assert c.avoided_per_year == pytest.approx(456e6)
    assert c.savings_per_year == pytest.approx(396e6)
    assert c.roi == pytest.approx(7.6)
    # The seed's own chain from its $5M request line: 78 = 12 × 6.5, 138 = 78 + 60, 7x = 422 / 60.
    seed_cf_year = 12 * (c.cloudfront_with.transfer + request_cost(5e12))
    assert seed_cf_year == pytest.approx(78e6)
    assert seed_cf_year + c.appliances_per_year == pytest.approx(138e6)
    assert (500e6 - seed_cf_year) / c.appliances_per_year == pytest.approx(7.03, abs=0.01)
    # The seed's fleet size follows from §2.1's ratio: 250M subscribers at 25,000 per appliance.
    assert appliances_needed(c.total.scaled(0.95), 250_000_000, ApplianceCost()) == 10_000


def test_break_even() -> None:
    c = seed_example()
    # $5M a month of appliances against $0.030/GB + $0.010/GB of requests (100 kB each).
    assert break_even_share(c) == pytest.approx(5e6 / (0.04 * 1000 * GB_PER_PB))
    assert break_even_gb_per_appliance(c) == pytest.approx(500 / 0.04)
    tiered = seed_example(flat_marginal=False)
    s = break_even_share(tiered)
    saved = tiered.cloudfront_without.total - cloudfront_bill(tiered.total.scaled(1 - s)).total
    assert saved == pytest.approx(tiered.appliances_per_year / 12, rel=1e-9)
    # A fleet that cannot pay for itself even serving everything has no break-even.
    tiny = Comparison(Traffic(gb=10.0, requests=1e3), 0.95, 10, ApplianceCost())
    assert math.isinf(break_even_share(tiny))


def test_cli_seed_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--seed-example", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figures"]["cloudfront_transfer_month"] == pytest.approx(1.5e6)
    assert out["figures"]["appliances_year"] == pytest.approx(out["seed"]["appliances_year"])
    assert main(["cost", "--traffic-pb", "20", "--subscribers", "2000000", "--avg-request-kb", "500"]) == 0
    text = capsys.readouterr().out
    assert "appliances" in text and "break-even" in text
