"""Seed 003's "segment playback test" for a fill: a video segment is stored only if its
fragmented-MP4 boxes parse and add up and it matches its Representation in the title's MPD
(codec, picture size, track and timescale of its init segment, duration, bitrate). MPDs and
init segments are read from the store, where the run puts them before the media segments."""

from __future__ import annotations

import posixpath
from pathlib import Path

from cdnlab.edge.fill import Rejected
from cdnlab.edge.store import Store
from cdnlab.fillplan import PlanObject
from cdnlab.media.dash import Representation, check_init, check_segment, parse_mpd, representation_for
from cdnlab.media.fmp4 import Fmp4Error, InitInfo, parse_init, parse_segment

MEDIA_SUFFIXES = (".m4s", ".mp4", ".m4v", ".m4a", ".cmfv", ".cmfa")
MAX_AUX = 8 * 1024 * 1024


def is_manifest(key: str) -> bool:
    return key.endswith(".mpd")


def is_media(key: str) -> bool:
    return key.endswith(MEDIA_SUFFIXES)


class PlaybackCheck:
    def __init__(self, store: Store, plan: list[PlanObject]) -> None:
        self.store = store
        self.mpds: dict[str, str] = {}  # title -> MPD key
        for o in plan:  # a title's MPD sits at /content/{title}/NAME.mpd (per-track ones do not count)
            parts = o.key.split("/")
            if is_manifest(o.key) and len(parts) == 4 and parts[1] == "content":
                self.mpds.setdefault(parts[2], o.key)
        self._reps: dict[str, list[Representation]] = {}
        self._inits: dict[str, InitInfo] = {}

    def _read(self, key: str) -> bytes:
        entry = self.store.lookup(key)
        if entry is None or entry.size > MAX_AUX:
            raise Rejected(f"{key} is needed to check the segment but is not in the store")
        try:
            with open(entry.path, "rb") as f:
                return f.read(MAX_AUX)
        except OSError as exc:
            raise Rejected(f"{key}: unreadable ({exc})") from None

    def _mpd_key(self, obj: PlanObject) -> str:
        title = obj.title or (obj.key.split("/")[2] if obj.key.startswith("/content/") else "")
        return self.mpds.get(title) or f"/content/{title}/manifest.mpd"

    def _representations(self, mpd_key: str) -> list[Representation]:
        if mpd_key not in self._reps:
            self._reps[mpd_key] = parse_mpd(self._read(mpd_key))
        return self._reps[mpd_key]

    def check(self, obj: PlanObject, path: Path) -> None:
        """Raise Rejected unless OBJ (its bytes at PATH) is fit to play. Not media: nothing to do."""
        if is_manifest(obj.key):
            try:
                parse_mpd(path.read_bytes())
            except Fmp4Error as exc:
                raise Rejected(f"{obj.key}: {exc}") from None
            return
        if not is_media(obj.key):
            return
        try:
            mpd_key = self._mpd_key(obj)
            reps = self._representations(mpd_key)
            rep = representation_for(reps, mpd_key, obj.key)
            if rep is None and obj.profile:
                rep = next((r for r in reps if r.id == obj.profile), None)
            if rep is None:
                raise Rejected(f"{obj.key}: no Representation of {mpd_key} names it")
            base = posixpath.dirname(mpd_key)
            init_key = posixpath.normpath(
                posixpath.join(base, (rep.initialization or "").replace("$RepresentationID$", rep.id))
            )
            data = path.read_bytes()
            if init_key == obj.key:
                init = parse_init(data)
                check_init(init, rep)
                self._inits[init_key] = init
                return
            init = self._inits.get(init_key)
            if init is None:
                init = parse_init(self._read(init_key))
                check_init(init, rep)
                self._inits[init_key] = init
            check_segment(parse_segment(data, init), init, rep, len(data))
        except Fmp4Error as exc:
            raise Rejected(f"{obj.key}: not playable: {exc}") from None
