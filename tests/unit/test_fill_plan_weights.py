"""How fill planning weighs titles: expected views (recent rate, or the forest's top-N
probability for a release without history) and bytes served per byte with ``session_bytes``."""

from __future__ import annotations

import numpy as np

from cdnlab.control.fill_plan import ApplianceSpec, CatalogUnit, Unit, expected_views, plan, session_bytes


def test_expected_views() -> None:
    days = 10
    views = np.zeros((days, 3))
    views[:, 0] = 100  # steady
    views[:, 1] = 400  # steady, the top title
    # title 2: released tomorrow, nothing yet
    prob = np.array([0.0, 1.0, 0.5])
    got = expected_views(views, prob, top=2)
    assert abs(got[0] - 100) < 1e-6
    assert abs(got[1] - 400) < 1e-6  # its rate and prob × top mean agree
    assert abs(got[2] - 0.5 * (400 + 100) / 2) < 1e-6  # half the mean of today's top 2
    views[-1, 0] = 1000  # a jump today lifts the rate more than older days would
    assert expected_views(views, prob, top=2)[0] > 300


def test_session_bytes_weighs_bytes_served() -> None:
    me = ApplianceSpec("a", "s", "r", flash_bytes=int(1.07e9), hdd_bytes=0)
    low = CatalogUnit(Unit("x", "240p"), 100_000_000, frozenset({"r"}))
    high = CatalogUnit(Unit("y", "1080p"), 1_000_000_000, frozenset({"r"}))
    pop = {"x": 1.0, "y": 1.0}
    # Views per byte: the small 240p unit first, and then the 1080p one no longer fits.
    assert set(plan(me, [me], [low, high], pop, {}).placement) == {low.unit}
    # Bytes served per byte: a 1080p session moves far more bytes; it wins the space.
    sb = {"240p": 100_000_000, "1080p": 1_000_000_000}
    assert set(plan(me, [me], [low, high], pop, {}, session_bytes=sb).placement) == {high.unit}
    assert session_bytes(60)["1080p"] == 5_000_000 // 8 * 3600
