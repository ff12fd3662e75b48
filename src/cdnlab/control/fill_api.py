"""Fill execution, the control plane's side: the content set to place (``PUT /v1/fill/content``),
each appliance's plan (``GET /v1/fill/plan?appliance=ID``, from ``fill_plan.plan`` over the
registry's tiers and the appliance's reported inventory) and the runs' progress
(``POST /v1/fill/progress``, ``GET /v1/fill/status``). The content set and the progress are kept
in this node's memory: publish again after a restart."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cdnlab.control.fill_plan import ApplianceSpec, CatalogUnit, TierKind, Unit, plan
from cdnlab.control.models import Appliance
from cdnlab.control.state import ControlState
from cdnlab.control.store import inventory_objects
from cdnlab.fillplan import FillPlanDoc, FillProgress, PlanObject, PlanPeer, PlanRemoval

_UNIT_KEY = re.compile(r"^/content/([^/]+)/([^/]+)/[^/]+$")
_TITLE_KEY = re.compile(r"^/content/([^/]+)/[^/]+$")
WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


class ContentObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^/content/[^/?#]+/")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FillContent(BaseModel):
    """The content set to place. A key ``/content/{title}/{profile}/…`` belongs to the unit
    (title, profile); ``/content/{title}/{file}`` (the MPD) goes with any unit of its title."""

    model_config = ConfigDict(extra="forbid")

    objects: list[ContentObject] = Field(max_length=2_000_000)
    popularity: dict[str, float] = Field(
        default_factory=dict, description="predicted views per title (missing: 1, equal)"
    )
    licensing: dict[str, list[str]] | None = Field(
        default=None,
        description="title → regions (sites, or site_regions' values) it is licensed in; "
        "a title not listed is licensed everywhere",
    )
    site_regions: dict[str, str] = Field(
        default_factory=dict, description="site → region (default: the site)"
    )
    hot: int = Field(default=0, ge=0, description="most popular titles planned on every appliance of a site")
    window: str | None = Field(default=None, description="suggested local fill window HH:MM-HH:MM")


class ContentSummary(BaseModel):
    objects: int
    bytes: int
    titles: int
    units: int
    published_at: float


class FillService:
    def __init__(self, state: ControlState) -> None:
        self.state = state
        self.content: FillContent | None = None
        self.published_at = 0.0
        self.units: dict[Unit, list[ContentObject]] = {}
        self.extras: dict[str, list[ContentObject]] = {}  # title → MPDs and other title-level files
        self.progress: dict[str, FillProgress] = {}

    def publish(self, content: FillContent) -> ContentSummary:
        if content.window is not None and not WINDOW.match(content.window):
            raise HTTPException(422, f"window {content.window!r} is not HH:MM-HH:MM")
        units: dict[Unit, list[ContentObject]] = {}
        extras: dict[str, list[ContentObject]] = {}
        for o in content.objects:
            if m := _UNIT_KEY.match(o.key):
                units.setdefault(Unit(m.group(1), m.group(2)), []).append(o)
            elif m := _TITLE_KEY.match(o.key):
                extras.setdefault(m.group(1), []).append(o)
            else:
                raise HTTPException(422, f"{o.key}: not /content/{{title}}/… at depth 2 or 3")
        self.content, self.units, self.extras = content, units, extras
        self.published_at = time.time()
        return self.summary()

    def summary(self) -> ContentSummary:
        objs = self.content.objects if self.content else []
        return ContentSummary(
            objects=len(objs),
            bytes=sum(o.size for o in objs),
            titles=len({u.title for u in self.units} | set(self.extras)),
            units=len(self.units),
            published_at=self.published_at,
        )

    def _spec(self, a: Appliance) -> ApplianceSpec:
        assert self.content is not None
        flash = sum(t.capacity_bytes for t in a.tiers if t.kind in ("flash", "ram"))
        hdd = sum(t.capacity_bytes for t in a.tiers if t.kind == "hdd")
        return ApplianceSpec(a.id, a.site, self.content.site_regions.get(a.site, a.site), flash, hdd)

    def _held(self, appliance_id: str) -> dict[str, tuple[str, str]]:
        t = inventory_objects
        with self.state.store.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.key, t.c.sha256, t.c.tier).where(t.c.appliance_id == appliance_id)
            ).all()
        return {k: (sha, "hdd" if tier == "hdd" else "flash") for k, sha, tier in rows}

    def plan_for(self, appliance_id: str) -> FillPlanDoc:
        a = self.state.appliances.get(appliance_id)
        if a is None:
            raise HTTPException(404, f"no appliance {appliance_id!r}")
        if self.content is None:
            raise HTTPException(409, "no content published (PUT /v1/fill/content)")
        content = self.content
        site = [x for x in self.state.appliances.values() if x.site == a.site]
        specs = [self._spec(x) for x in site]
        me = next(s for s in specs if s.id == a.id)
        if me.weight <= 0:
            raise HTTPException(409, f"{a.id} is registered without flash or hdd tiers")
        licensing = content.licensing or {}
        all_regions = frozenset({s.region for s in specs} | set(content.site_regions.values()))
        catalog = [
            CatalogUnit(
                u,
                sum(o.size for o in objs) + sum(o.size for o in self.extras.get(u.title, [])),
                frozenset(licensing[u.title]) if u.title in licensing else all_regions,
            )
            for u, objs in self.units.items()
        ]
        popularity = {u.title: content.popularity.get(u.title, 1.0) for u in self.units}
        held = self._held(a.id)
        held_units: dict[Unit, TierKind] = {}
        for u, objs in self.units.items():
            got = [held.get(o.key) for o in objs]
            if got and all(g is not None and g[0] in ("", o.sha256) for g, o in zip(got, objs, strict=True)):
                held_units[u] = got[0][1]  # type: ignore[index,assignment]
        for key, (_, tier) in held.items():  # units no longer in the content set: to remove
            if (m := _UNIT_KEY.match(key)) and (u := Unit(m.group(1), m.group(2))) not in self.units:
                held_units[u] = tier  # type: ignore[assignment]
        p = plan(me, [s for s in specs if s.weight > 0], catalog, popularity, held_units, hot=content.hot)
        order = {u: i for i, (u, _) in enumerate(p.fetch)}
        placed = sorted(p.placement, key=lambda u: (order.get(u, -1), u))
        objects: list[PlanObject] = []
        titles_done: set[str] = set()
        for u in placed:
            tier = p.placement[u]
            if u.title not in titles_done:  # the MPD before the title's segments
                titles_done.add(u.title)
                for o in self.extras.get(u.title, []):
                    if held.get(o.key, ("", ""))[0] != o.sha256:
                        objects.append(
                            PlanObject(key=o.key, size=o.size, sha256=o.sha256, tier=tier, title=u.title)
                        )
            for o in sorted(
                self.units[u], key=lambda o: (not o.key.rsplit("/", 1)[-1].startswith("init"), o.key)
            ):
                if held.get(o.key, ("", ""))[0] != o.sha256:
                    objects.append(
                        PlanObject(
                            key=o.key,
                            size=o.size,
                            sha256=o.sha256,
                            tier=tier,
                            title=u.title,
                            profile=u.profile,
                        )
                    )
        remove = [PlanRemoval(prefix=u.prefix) for u, _ in p.remove]
        placed_titles = {u.title for u in p.placement}
        for key in sorted(held):  # title-level files (MPDs) of titles it no longer holds
            if (m := _TITLE_KEY.match(key)) and m.group(1) not in placed_titles:
                remove.append(PlanRemoval(key=key))
        return FillPlanDoc(
            appliance_id=a.id,
            site=a.site,
            generated_at=time.time(),
            window=content.window,
            objects=objects,
            remove=remove,
            peers=[PlanPeer(id=x.id, url=x.url, admin_url=x.admin_url) for x in site if x.id != a.id],
            bytes_to_fetch=sum(o.size for o in objects),
            budget={k: int(v) for k, v in p.budget.items()},
        )


def router(service: FillService, dependencies: list[Any]) -> APIRouter:
    r = APIRouter(prefix="/v1/fill", tags=["fill"], dependencies=dependencies)

    @r.put("/content", response_model=ContentSummary)
    def put_content(content: FillContent) -> ContentSummary:
        """Replace the content set the plans place (keys, sizes, SHA-256, popularity, licensing)."""
        return service.publish(content)

    @r.get("/content", response_model=ContentSummary)
    def get_content() -> ContentSummary:
        return service.summary()

    @r.get(
        "/plan",
        response_model=FillPlanDoc,
        responses={404: {"description": "unknown appliance"}, 409: {"description": "nothing to plan"}},
    )
    def get_plan(appliance: str = Query(min_length=1, max_length=128)) -> FillPlanDoc:
        """The appliance's plan: what to fetch (not already reported held), what to remove, and
        its site's peers. Computed on every call from the registry and the latest inventory."""
        return service.plan_for(appliance)

    @r.post("/progress", status_code=204, responses={404: {"description": "unknown appliance"}})
    def post_progress(progress: FillProgress) -> None:
        if progress.appliance_id not in service.state.appliances:
            raise HTTPException(404, f"no appliance {progress.appliance_id!r}")
        service.progress[progress.appliance_id] = progress

    @r.get("/status", response_model=list[FillProgress])
    def status(appliance: str | None = None) -> list[FillProgress]:
        """The latest progress report of every appliance (or one)."""
        return [p for k, p in sorted(service.progress.items()) if appliance in (None, k)]

    return r
