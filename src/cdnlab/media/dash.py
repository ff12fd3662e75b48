"""The parts of a DASH MPD (ISO/IEC 23009-1) the fill's playback test needs: each
Representation's id, bandwidth, codecs, size and SegmentTemplate, and a check of a parsed fMP4
init/media segment against them."""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cdnlab.media.fmp4 import Fmp4Error, InitInfo, SegmentInfo

MAX_MPD_BYTES = 4 * 1024 * 1024
# A single segment may exceed the Representation's bandwidth (DASH's bandwidth holds over
# minBufferTime, not per segment); three times it means another rendition or junk.
BANDWIDTH_SLACK = 3.0


@dataclass(frozen=True)
class Representation:
    id: str
    bandwidth: int
    codecs: str
    width: int | None
    height: int | None
    timescale: int  # of the SegmentTemplate
    duration: int | None  # nominal segment duration in that timescale
    initialization: str | None  # template, relative to the MPD's directory
    media: str | None

    def matches_key(self, rel: str) -> bool:
        """Is REL (a path relative to the MPD) this Representation's init or one of its segments?"""
        if self.initialization and rel == self.initialization.replace("$RepresentationID$", self.id):
            return True
        if not self.media:
            return False
        pattern = re.escape(self.media.replace("$RepresentationID$", self.id))
        pattern = re.sub(r"\\\$(Number|Time)(%0(\d+)d)?\\\$", r"\\d+", pattern)
        return re.fullmatch(pattern, rel) is not None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_mpd(data: bytes) -> list[Representation]:
    if len(data) > MAX_MPD_BYTES:
        raise Fmp4Error(f"MPD of {len(data)} bytes is too large")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise Fmp4Error(f"MPD is not XML: {exc}") from None
    if _local(root.tag) != "MPD":
        raise Fmp4Error(f"root element is {_local(root.tag)}, not MPD")
    reps: list[Representation] = []
    for aset in root.iter():
        if _local(aset.tag) != "AdaptationSet":
            continue
        set_tmpl = next((c for c in aset if _local(c.tag) == "SegmentTemplate"), None)
        for rep in aset:
            if _local(rep.tag) != "Representation":
                continue
            tmpl = next((c for c in rep if _local(c.tag) == "SegmentTemplate"), set_tmpl)
            attr = {**aset.attrib, **rep.attrib}
            try:
                t = tmpl.attrib if tmpl is not None else {}
                reps.append(
                    Representation(
                        id=attr["id"],
                        bandwidth=int(attr["bandwidth"]),
                        codecs=attr.get("codecs", ""),
                        width=int(attr["width"]) if "width" in attr else None,
                        height=int(attr["height"]) if "height" in attr else None,
                        timescale=int(t.get("timescale", "1")),
                        duration=int(t["duration"]) if "duration" in t else None,
                        initialization=t.get("initialization"),
                        media=t.get("media"),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise Fmp4Error(f"Representation without a valid {exc}") from None
    if not reps:
        raise Fmp4Error("MPD has no Representation")
    return reps


def representation_for(reps: list[Representation], mpd_key: str, key: str) -> Representation | None:
    """The Representation whose template names KEY (both absolute paths), if any."""
    rel = posixpath.relpath(key, posixpath.dirname(mpd_key))
    return next((r for r in reps if r.matches_key(rel)), None)


def check_init(init: InitInfo, rep: Representation) -> None:
    """The init segment is the Representation's: codec family, AVC profile, picture size."""
    want = rep.codecs.split(",")[0].strip()
    if want:
        fourcc = want.split(".")[0]
        if fourcc != init.codec:
            raise Fmp4Error(f"codec {init.codec} in the init segment, the MPD says {want}")
        parts = want.split(".")
        profile = parts[1][:2] if fourcc in ("avc1", "avc3") and len(parts) > 1 else ""
        hexed = len(profile) == 2 and all(c in "0123456789abcdefABCDEF" for c in profile)
        if hexed and init.avc_profile is not None and int(profile, 16) != init.avc_profile:
            raise Fmp4Error(f"AVC profile {init.avc_profile} in the init segment, the MPD says {want}")
    if rep.width is not None and rep.height is not None and init.handler == "vide":
        # The MPD may give the coded size or the presentation size (tkhd, after the aspect
        # ratio is applied, e.g. 853 for 854 coded): either, to the pixel, will do.
        for w, h in ((init.coded_width, init.coded_height), (init.width, init.height)):
            if abs(w - rep.width) <= 1 and abs(h - rep.height) <= 1:
                return
        raise Fmp4Error(f"picture {init.width}x{init.height}, the MPD says {rep.width}x{rep.height}")


def check_segment(seg: SegmentInfo, init: InitInfo, rep: Representation, size: int) -> None:
    """A media segment fits the Representation: no longer than the nominal duration (plus a
    frame's worth of slack), and a bitrate within BANDWIDTH_SLACK of its bandwidth."""
    if seg.duration <= 0 or seg.samples <= 0:
        raise Fmp4Error("segment has no samples")
    seconds = seg.duration / init.timescale
    if rep.duration:
        nominal = rep.duration / rep.timescale
        if seconds > nominal * 1.1 + 0.1:
            raise Fmp4Error(f"segment lasts {seconds:.3f} s, the MPD's segments last {nominal:g} s")
    bps = size * 8 / max(seconds, 1e-3)
    if bps > rep.bandwidth * BANDWIDTH_SLACK:
        raise Fmp4Error(f"segment bitrate {bps:,.0f} bit/s, the MPD's bandwidth is {rep.bandwidth:,}")
