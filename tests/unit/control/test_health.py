"""The health monitor against fake admin APIs on loopback, and the optimistic combination."""

from __future__ import annotations

import asyncio
import time

from control_fixtures import FakeAppliance

from cdnlab.control.config import HealthConfig
from cdnlab.control.health import HealthMonitor, combine, measurements_from
from cdnlab.control.models import Appliance, HealthView


def _appliance(fake: FakeAppliance, **kw) -> Appliance:
    return Appliance(id=fake.id, site="s", url="http://127.0.0.1:1", admin_url=fake.url, **kw)


def _monitor(appliances: list[Appliance], **cfg) -> HealthMonitor:
    rounds: list[list[HealthView]] = []
    mon = HealthMonitor(
        "m1",
        HealthConfig(interval=0.2, timeout=0.5, **cfg),
        appliances=lambda: appliances,
        on_round=rounds.append,
    )
    mon.rounds_seen = rounds  # type: ignore[attr-defined]
    return mon


def test_poll_verdicts() -> None:
    async def main() -> None:
        fake = FakeAppliance("edge-1")
        await fake.start()
        a = _appliance(fake)
        mon = _monitor([a], thresholds={"connections": "<10", "query_time_ms": "<400"})
        try:
            v = (await mon.round())[0]
            assert v.available and v.drain_state == "serving" and v.measurements["connections"] == 3
            fake.connections = 50
            v = (await mon.round())[0]
            assert not v.available and v.reasons == ["connections=50 breaks <10"]
            fake.connections = 1
            fake.state = "draining"
            v = (await mon.round())[0]
            assert not v.available and v.drain_state == "draining" and "state draining" in v.reasons
            fake.state = "serving"
            fake.mode = "error"
            v = (await mon.round())[0]
            assert not v.available and v.reasons[0].startswith("poll failed")
            fake.mode = "slow"
            t0 = time.monotonic()
            v = (await mon.round())[0]
            assert not v.available and "timeout" in v.reasons[0] and time.monotonic() - t0 < 2
            fake.mode = "garbage"
            assert not (await mon.round())[0].available
        finally:
            await mon.close()
            await fake.stop()

    asyncio.run(main())


def test_error_rate_and_bandwidth_from_metrics() -> None:
    async def main() -> None:
        fake = FakeAppliance("edge-1")
        await fake.start()
        a = _appliance(fake, capacity_bps=1_000_000)
        mon = _monitor([a], thresholds={"error_rate": "<0.05", "bandwidth_utilization": "<0.8"})
        try:
            assert (await mon.round())[0].available
            fake.requests = {"hit": 90, "miss": 0, "5xx": 10}
            v = (await mon.round())[0]
            assert not v.available and v.measurements["error_rate"] == 0.1
            fake.requests = {"hit": 190, "miss": 10, "5xx": 10}
            await asyncio.sleep(0.1)
            fake.bytes = 10_000_000  # far beyond 80 % of 1 Mbit/s over the interval
            v = (await mon.round())[0]
            assert v.measurements["error_rate"] == 0.0
            assert any(r.startswith("bandwidth_utilization=") for r in v.reasons)
            assert v.stats["requests"] == 210 and v.stats["by_cache"]["hit"] == 190
        finally:
            await mon.close()
            await fake.stop()

    asyncio.run(main())


def test_inventory_pulled_when_never_reported() -> None:
    async def main() -> None:
        fake = FakeAppliance("edge-1")
        fake.objects = [{"key": "/content/t1/a/seg-00001.m4s", "size": 5, "sha256": "", "tier": "flash"}]
        fake.generation = 3
        await fake.start()
        got = []
        mon = HealthMonitor(
            "m1",
            HealthConfig(interval=0.2, timeout=0.5),
            appliances=lambda: [_appliance(fake)],
            on_round=lambda v: None,
            needs_inventory=lambda a: not got,
            on_inventory=got.append,
        )
        try:
            await mon.round()
            await mon.round()
            assert fake.inventory_pulls == 1 and got[0].full and got[0].generation == 3
        finally:
            await mon.close()
            await fake.stop()

    asyncio.run(main())


def test_online_and_offline_are_not_polled() -> None:
    async def main() -> None:
        fake = FakeAppliance("edge-1")
        await fake.start()
        mon = _monitor([_appliance(fake, admin_state="online"), _appliance(fake, admin_state="offline")])
        try:
            assert await mon.round() == []
        finally:
            await mon.close()
            await fake.stop()

    asyncio.run(main())


def test_run_loop_polls_every_interval_and_stops() -> None:
    async def main() -> None:
        fake = FakeAppliance("edge-1")
        await fake.start()
        mon = _monitor([_appliance(fake)])
        stop = asyncio.Event()
        task = asyncio.create_task(mon.run(stop))
        await asyncio.sleep(0.7)
        stop.set()
        await asyncio.wait_for(task, 2)
        await fake.stop()
        assert 3 <= mon.rounds <= 5

    asyncio.run(main())


def _view(monitor: str, ok: bool, age: float = 0.0) -> HealthView:
    return HealthView(
        monitor_id=monitor, appliance_id="e", available=ok, checked_at=time.time() - age, reasons=[]
    )


def test_combine_is_optimistic() -> None:
    a = Appliance(id="e", site="s", url="http://x", admin_url="http://y")
    now = time.time()
    assert combine(a, [_view("m1", False), _view("m2", True)], now, 3)[0]
    ok, reason, _ = combine(a, [_view("m1", False), _view("m2", False)], now, 3)
    assert not ok and "every monitor" in reason
    # A stale view has no say, in either direction.
    assert not combine(a, [_view("m1", False), _view("m2", True, age=10)], now, 3)[0]
    assert not combine(a, [], now, 3)[0]
    assert not combine(a.model_copy(update={"admin_state": "admin-down"}), [_view("m1", True)], now, 3)[0]
    assert combine(a.model_copy(update={"admin_state": "online"}), [], now, 3)[0]
    assert not combine(a.model_copy(update={"admin_state": "offline"}), [_view("m1", True)], now, 3)[0]


def test_measurements_first_poll_uses_appliance_rates() -> None:
    m = measurements_from({"load": {"connections": 2, "bytes_per_s": 1000.0}}, 3.0, None, 80_000)
    assert (
        m["bandwidth_bps"] == 8000
        and m["bandwidth_utilization"] == 0.1
        and m["available_bandwidth_kbps"] == 72
    )
