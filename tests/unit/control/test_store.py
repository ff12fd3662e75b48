"""The state tests, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import time

import pytest

from cdnlab.control.models import Appliance, AppliancePatch, HealthView, TierInfo
from cdnlab.control.store import GenerationGap, StaleReport, Store
from cdnlab.inventory import InventoryObject, InventoryReport


def _appliance(aid: str, site: str = "site-a", **kw) -> Appliance:
    return Appliance(
        id=aid,
        site=site,
        url=f"http://127.0.0.1:{8000 + int(aid[-1])}",
        admin_url=f"http://127.0.0.1:{9000 + int(aid[-1])}",
        tiers=[TierInfo(kind="flash", capacity_bytes=1 << 30)],
        **kw,
    )


def _obj(key: str, size: int = 100) -> InventoryObject:
    return InventoryObject(key=key, size=size, sha256="ab" * 32, tier="flash")


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    yield s
    s.close()


def test_registry_roundtrip(store: Store) -> None:
    rev0 = store.revision()
    store.put_appliance(_appliance("e1", isp="isp-x", asn=64500, latitude=40.0, longitude=-74.0))
    store.put_appliance(_appliance("e2", site="site-b"))
    assert store.revision() > rev0
    got = store.get_appliance("e1")
    assert got is not None and got.asn == 64500 and got.tiers[0].kind == "flash"
    assert [a.id for a in store.list_appliances()] == ["e1", "e2"]
    patched = store.patch_appliance("e1", AppliancePatch(admin_state="admin-down"))
    assert patched is not None and patched.admin_state == "admin-down" and patched.isp == "isp-x"
    assert store.patch_appliance("nope", AppliancePatch(site="x")) is None
    store.set_drain_state("e2", "draining")
    assert store.get_appliance("e2").drain_state == "draining"  # type: ignore[union-attr]
    assert store.delete_appliance("e2") and not store.delete_appliance("e2")
    assert [a.id for a in store.list_appliances()] == ["e1"]


def test_bulk_registration(store: Store) -> None:
    n = store.put_appliances(
        _appliance(f"x{i % 10}").model_copy(update={"id": f"bulk-{i}"}) for i in range(2500)
    )
    assert n == 2500 and len(store.list_appliances()) == 2500


def test_inventory_full_then_deltas(store: Store) -> None:
    store.put_appliance(_appliance("e1"))
    full = InventoryReport(
        appliance_id="e1",
        generation=5,
        full=True,
        objects=[_obj("/content/t1/480p/seg-00001.m4s"), _obj("/content/t1/manifest.mpd"), _obj("/other/x")],
    )
    assert store.apply_inventory(full) == 3
    assert store.title_index() == {"t1": {"e1"}}
    delta = InventoryReport(
        appliance_id="e1",
        generation=7,
        full=False,
        added=[_obj("/content/t2/480p/seg-00001.m4s")],
        removed=["/content/t1/480p/seg-00001.m4s", "/content/t1/manifest.mpd"],
    )
    assert store.apply_inventory(delta, since=5) == 2
    assert store.title_index() == {"t2": {"e1"}}
    summary = store.inventory_summary("e1")
    assert summary["generation"] == 7 and summary["titles"] == ["t2"] and summary["objects"] == 2
    with pytest.raises(StaleReport):
        store.apply_inventory(delta.model_copy(update={"generation": 6}))
    with pytest.raises(GenerationGap):
        store.apply_inventory(delta.model_copy(update={"generation": 9}), since=8)
    # A full report always replaces, even with a lower generation (the appliance restarted).
    assert store.apply_inventory(full.model_copy(update={"generation": 1})) == 3
    assert store.inventory_generations() == {"e1": 1}


def test_delta_before_full_is_a_gap(store: Store) -> None:
    store.put_appliance(_appliance("e1"))
    with pytest.raises(GenerationGap):
        store.apply_inventory(InventoryReport(appliance_id="e1", generation=1, full=False, added=[]))


def test_health_views_and_liveness(store: Store) -> None:
    store.put_appliance(_appliance("e1"))
    now = time.time()
    v = HealthView(
        monitor_id="m1", appliance_id="e1", available=True, checked_at=now, measurements={"x": 1.0}
    )
    store.put_health_views("m1", 1.0, [v])
    store.put_health_views("m2", 1.0, [v.model_copy(update={"monitor_id": "m2", "available": False})])
    views = store.load_health_views(live_within=10)
    assert sorted((x.monitor_id, x.available) for x in views) == [("m1", True), ("m2", False)]
    assert views[0].measurements in ({"x": 1.0}, {})
    assert set(store.monitor_heartbeats()) == {"m1", "m2"}
    # A monitor that has not reported recently has no say.
    assert store.load_health_views(live_within=-1) == []


def test_title_holdings_bulk(store: Store) -> None:
    store.put_title_holdings({"a1": {"t1": 3, "t2": 1}, "a2": {"t1": 1}})
    assert store.title_index() == {"t1": {"a1", "a2"}, "t2": {"a1"}}
