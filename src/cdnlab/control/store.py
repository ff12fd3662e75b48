"""State behind SQLAlchemy: SQLite embedded by default, PostgreSQL for a fleet that outgrows one
control node (several control nodes and monitors then share one database).

The database is the truth; each node keeps an in-memory snapshot for steering (state.py) and
reloads it when ``revision`` moves (bumped by every registry or inventory write, by any node).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from cdnlab.control.models import Appliance, AppliancePatch, HealthView
from cdnlab.inventory import InventoryObject, InventoryReport, title_of

metadata = MetaData()

appliances = Table(
    "appliances",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("site", String(128), nullable=False, index=True),
    Column("isp", String(128)),
    Column("asn", BigInteger),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("url", Text, nullable=False),
    Column("admin_url", Text, nullable=False),
    Column("capacity_bps", BigInteger, nullable=False),
    Column("tiers", JSON, nullable=False),
    Column("admin_state", String(16), nullable=False),
    Column("drain_state", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

inventory_objects = Table(
    "inventory_objects",
    metadata,
    Column("appliance_id", String(128), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("title", String(256), index=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("tier", String(8), nullable=False),
)

inventory_meta = Table(
    "inventory_meta",
    metadata,
    Column("appliance_id", String(128), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("reported_at", Float, nullable=False),
    Column("source", String(16), nullable=False),
)

# Per appliance and title: how many objects it holds. Steering reads only this.
appliance_titles = Table(
    "appliance_titles",
    metadata,
    Column("appliance_id", String(128), primary_key=True),
    Column("title", String(256), primary_key=True),
    Column("objects", Integer, nullable=False),
)

health_views = Table(
    "health_views",
    metadata,
    Column("monitor_id", String(128), primary_key=True),
    Column("appliance_id", String(128), primary_key=True),
    Column("available", Boolean, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("checked_at", Float, nullable=False),
    Column("drain_state", String(16)),
    Column("measurements", JSON, nullable=False),
    Column("stats", JSON, nullable=False),
)

monitors = Table(
    "monitors",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("heartbeat_at", Float, nullable=False),
    Column("interval", Float, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


class StaleReport(Exception):
    pass


class GenerationGap(Exception):
    pass


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the monitor write while steering reads; busy_timeout rides out short write locks.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._dialect = self.engine.dialect.name
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(select(meta.c.value).where(meta.c.key == "revision")).first() is None:
                self._upsert(conn, meta, [{"key": "revision", "value": 0}], ["key"])

    def close(self) -> None:
        self.engine.dispose()

    # -- helpers -------------------------------------------------------------------------------

    def _upsert(self, conn: Any, table: Table, rows: list[dict], keys: list[str]) -> None:
        if not rows:
            return
        ins = (postgresql if self._dialect == "postgresql" else sqlite).insert(table)
        cols = {c: ins.excluded[c] for c in rows[0] if c not in keys}
        stmt = (
            ins.on_conflict_do_update(index_elements=keys, set_=cols)
            if cols
            else ins.on_conflict_do_nothing()
        )
        conn.execute(stmt, rows)

    def _bump(self, conn: Any) -> None:
        conn.execute(update(meta).where(meta.c.key == "revision").values(value=meta.c.value + 1))

    def revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meta.c.value).where(meta.c.key == "revision")).scalar_one())

    # -- registry ------------------------------------------------------------------------------

    @staticmethod
    def _row(a: Appliance) -> dict:
        d = a.model_dump()
        d["tiers"] = [t.model_dump() for t in a.tiers]
        return d

    def put_appliance(self, a: Appliance) -> Appliance:
        a = a.model_copy(update={"updated_at": time.time()})
        with self.engine.begin() as conn:
            self._upsert(conn, appliances, [self._row(a)], ["id"])
            self._bump(conn)
        return a

    def put_appliances(self, items: Iterable[Appliance]) -> int:
        """Bulk registration (the benchmark registers 10,000 at once)."""
        now = time.time()
        rows = [self._row(a.model_copy(update={"updated_at": now})) for a in items]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), 1000):
                self._upsert(conn, appliances, rows[i : i + 1000], ["id"])
            self._bump(conn)
        return len(rows)

    def patch_appliance(self, appliance_id: str, patch: AppliancePatch) -> Appliance | None:
        current = self.get_appliance(appliance_id)
        if current is None:
            return None
        changes = patch.model_dump(exclude_unset=True)
        updated = Appliance.model_validate({**current.model_dump(), **changes})
        return self.put_appliance(updated)

    def set_drain_state(self, appliance_id: str, drain_state: str) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(appliances)
                .where(appliances.c.id == appliance_id, appliances.c.drain_state != drain_state)
                .values(drain_state=drain_state, updated_at=time.time())
            )
            if res.rowcount:
                self._bump(conn)

    def delete_appliance(self, appliance_id: str) -> bool:
        with self.engine.begin() as conn:
            n = conn.execute(delete(appliances).where(appliances.c.id == appliance_id)).rowcount
            for table in (inventory_objects, inventory_meta, appliance_titles, health_views):
                conn.execute(delete(table).where(table.c.appliance_id == appliance_id))
            self._bump(conn)
        return bool(n)

    def get_appliance(self, appliance_id: str) -> Appliance | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(appliances).where(appliances.c.id == appliance_id)).mappings().first()
        return Appliance.model_validate(dict(row)) if row else None

    def list_appliances(self) -> list[Appliance]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(appliances).order_by(appliances.c.id)).mappings().all()
        return [Appliance.model_validate(dict(r)) for r in rows]

    # -- inventory -----------------------------------------------------------------------------

    def inventory_generation(self, appliance_id: str) -> int | None:
        with self.engine.connect() as conn:
            g = conn.execute(
                select(inventory_meta.c.generation).where(inventory_meta.c.appliance_id == appliance_id)
            ).scalar()
        return None if g is None else int(g)

    def apply_inventory(self, report: InventoryReport, source: str = "push", since: int | None = None) -> int:
        """Apply a full or delta report; returns the object count after. A delta older than what
        we hold raises StaleReport; one that does not start where we are raises GenerationGap."""
        aid = report.appliance_id
        with self.engine.begin() as conn:
            current = conn.execute(
                select(inventory_meta.c.generation).where(inventory_meta.c.appliance_id == aid)
            ).scalar()
            if not report.full:
                if current is None:
                    raise GenerationGap("no full report yet")
                if report.generation <= current:
                    raise StaleReport(f"generation {report.generation} <= held {current}")
                if since is not None and since != current:
                    raise GenerationGap(f"delta starts at {since}, held {current}")
            if report.full:
                conn.execute(delete(inventory_objects).where(inventory_objects.c.appliance_id == aid))
                self._insert_objects(conn, aid, report.objects or [])
            else:
                removed = list(report.removed or [])
                for i in range(0, len(removed), 500):
                    conn.execute(
                        delete(inventory_objects).where(
                            inventory_objects.c.appliance_id == aid,
                            inventory_objects.c.key.in_(removed[i : i + 500]),
                        )
                    )
                added = report.added or []
                if added:
                    rows = [self._object_row(aid, o) for o in added]
                    for i in range(0, len(rows), 1000):
                        self._upsert(conn, inventory_objects, rows[i : i + 1000], ["appliance_id", "key"])
            self._upsert(
                conn,
                inventory_meta,
                [
                    {
                        "appliance_id": aid,
                        "generation": report.generation,
                        "reported_at": time.time(),
                        "source": source,
                    }
                ],
                ["appliance_id"],
            )
            self._rebuild_titles(conn, aid)
            self._bump(conn)
            count = conn.execute(
                select(func.count())
                .select_from(inventory_objects)
                .where(inventory_objects.c.appliance_id == aid)
            ).scalar_one()
        return int(count)

    @staticmethod
    def _object_row(aid: str, o: InventoryObject) -> dict:
        return {
            "appliance_id": aid,
            "key": o.key,
            "title": title_of(o.key),
            "size": o.size,
            "sha256": o.sha256,
            "tier": o.tier,
        }

    def _insert_objects(self, conn: Any, aid: str, objects: list[InventoryObject]) -> None:
        # A full report may list a key twice (two tiers); the last one wins.
        rows = list({o.key: self._object_row(aid, o) for o in objects}.values())
        for i in range(0, len(rows), 1000):
            conn.execute(inventory_objects.insert(), rows[i : i + 1000])

    def _rebuild_titles(self, conn: Any, aid: str) -> None:
        conn.execute(delete(appliance_titles).where(appliance_titles.c.appliance_id == aid))
        counts = conn.execute(
            select(inventory_objects.c.title, func.count())
            .where(inventory_objects.c.appliance_id == aid, inventory_objects.c.title.is_not(None))
            .group_by(inventory_objects.c.title)
        ).all()
        if counts:
            conn.execute(
                appliance_titles.insert(),
                [{"appliance_id": aid, "title": t, "objects": int(n)} for t, n in counts],
            )

    def inventory_summary(self, appliance_id: str) -> dict:
        with self.engine.connect() as conn:
            m = (
                conn.execute(select(inventory_meta).where(inventory_meta.c.appliance_id == appliance_id))
                .mappings()
                .first()
            )
            n, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(inventory_objects.c.size), 0)).where(
                    inventory_objects.c.appliance_id == appliance_id
                )
            ).one()
            titles = (
                conn.execute(
                    select(appliance_titles.c.title)
                    .where(appliance_titles.c.appliance_id == appliance_id)
                    .order_by(appliance_titles.c.title)
                )
                .scalars()
                .all()
            )
        return {
            "appliance_id": appliance_id,
            "generation": int(m["generation"]) if m else None,
            "objects": int(n),
            "bytes": int(size),
            "titles": list(titles),
            "reported_at": float(m["reported_at"]) if m else None,
            "source": m["source"] if m else None,
        }

    def inventory_keys(self, appliance_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(inventory_objects.c.key)
                    .where(inventory_objects.c.appliance_id == appliance_id)
                    .order_by(inventory_objects.c.key)
                ).scalars()
            )

    def title_index(self) -> dict[str, set[str]]:
        """title → appliance ids holding at least one of its objects."""
        out: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for aid, title in conn.execute(select(appliance_titles.c.appliance_id, appliance_titles.c.title)):
                out.setdefault(title, set()).add(aid)
        return out

    def inventory_generations(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                a: int(g)
                for a, g in conn.execute(select(inventory_meta.c.appliance_id, inventory_meta.c.generation))
            }

    def put_title_holdings(self, holdings: dict[str, dict[str, int]]) -> None:
        """Bulk {appliance: {title: objects}} (the benchmark's synthetic inventory)."""
        rows = [
            {"appliance_id": a, "title": t, "objects": n} for a, ts in holdings.items() for t, n in ts.items()
        ]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), 2000):
                self._upsert(conn, appliance_titles, rows[i : i + 2000], ["appliance_id", "title"])
            self._bump(conn)

    # -- health --------------------------------------------------------------------------------

    def put_health_views(self, monitor_id: str, interval: float, views: list[HealthView]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            rows = [
                {
                    "monitor_id": v.monitor_id,
                    "appliance_id": v.appliance_id,
                    "available": v.available,
                    "reasons": v.reasons,
                    "checked_at": v.checked_at,
                    "drain_state": v.drain_state,
                    "measurements": v.measurements,
                    "stats": v.stats,
                }
                for v in views
            ]
            for i in range(0, len(rows), 500):
                self._upsert(conn, health_views, rows[i : i + 500], ["monitor_id", "appliance_id"])
            self._upsert(
                conn, monitors, [{"id": monitor_id, "heartbeat_at": now, "interval": interval}], ["id"]
            )

    def load_health_views(self, live_within: float | None = None) -> list[HealthView]:
        """Views of every monitor whose last round is recent (all monitors if live_within is None)."""
        q = select(health_views)
        if live_within is not None:
            live = select(monitors.c.id).where(monitors.c.heartbeat_at >= time.time() - live_within)
            q = q.where(health_views.c.monitor_id.in_(live))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("reasons", "measurements", "stats"):
                if isinstance(d[k], str):  # some drivers hand JSON back as text
                    d[k] = json.loads(d[k])
            out.append(HealthView.model_validate(d))
        return out

    def monitor_heartbeats(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            return {m: float(h) for m, h in conn.execute(select(monitors.c.id, monitors.c.heartbeat_at))}
