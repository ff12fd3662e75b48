"""A fragmented-MP4 (ISO BMFF, ISO/IEC 14496-12) box parser for the fill's segment playback test.

``parse_init`` reads an initialization segment (``ftyp`` + ``moov``: the track's id, handler,
timescale, codec, picture size, ``trex`` defaults); ``parse_segment`` reads a media segment
(``styp``? ``sidx``* then ``moof``/``mdat`` pairs) and checks that it hangs together: every box
size fits its parent, ``mfhd``/``tfhd``/``tfdt``/``trun`` are present, the track is the init's,
the ``trun`` sample sizes add up to the ``mdat`` payload and its data offset points into it.
``check_against`` compares both with a DASH Representation (``cdnlab.media.dash``).

Pure Python over bytes; never trusts a length field (a hostile segment gets ``Fmp4Error``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_DEPTH = 16
CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"edts", b"dinf"}
)


class Fmp4Error(ValueError):
    """The bytes are not a playable fragmented MP4 segment (the message says why)."""


@dataclass(frozen=True)
class Box:
    type: str
    start: int  # offset of the box header
    header: int  # header length (8, 16, or +16 for uuid)
    size: int  # whole box

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid end to end in data[start:end]; a size that overruns the parent raises."""
    end = len(data) if end is None else end
    off = start
    while off < end:
        if end - off < 8:
            raise Fmp4Error(f"{end - off} stray bytes at offset {off} (a box header is 8)")
        size, raw = struct.unpack_from(">I4s", data, off)
        header = 8
        if size == 1:
            if end - off < 16:
                raise Fmp4Error(f"truncated 64-bit box size at offset {off}")
            (size,) = struct.unpack_from(">Q", data, off + 8)
            header = 16
        elif size == 0:  # "to the end of the file": only legal for the last box
            size = end - off
        if raw == b"uuid":
            header += 16
        if size < header or off + size > end:
            raise Fmp4Error(f"box {raw!r} at offset {off} claims {size} bytes; only {end - off} left")
        try:
            kind = raw.decode("ascii")
        except UnicodeDecodeError:
            raise Fmp4Error(f"box type {raw!r} at offset {off} is not ASCII") from None
        yield Box(kind, off, header, size)
        off += size


def _children(data: bytes, box: Box) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for b in iter_boxes(data, box.body, box.end):
        out.setdefault(b.type, []).append(b)
    return out


def _one(kids: dict[str, list[Box]], name: str, where: str) -> Box:
    got = kids.get(name, [])
    if len(got) != 1:
        raise Fmp4Error(f"{where}: expected one '{name}' box, found {len(got)}")
    return got[0]


def _full(data: bytes, box: Box, need: int) -> tuple[int, int, int]:
    """(version, flags, offset after them) of a full box whose payload needs NEED more bytes."""
    if box.size - box.header < 4 + need:
        raise Fmp4Error(f"'{box.type}' box too short ({box.size} bytes)")
    v_flags = struct.unpack_from(">I", data, box.body)[0]
    return v_flags >> 24, v_flags & 0xFFFFFF, box.body + 4


def _check_tree(data: bytes, box: Box, depth: int = 0) -> None:
    """Walk containers so a bad size anywhere inside is caught."""
    if depth > MAX_DEPTH:
        raise Fmp4Error("boxes nested too deep")
    if box.type.encode() in CONTAINERS:
        for b in iter_boxes(data, box.body, box.end):
            _check_tree(data, b, depth + 1)


@dataclass(frozen=True)
class InitInfo:
    track_id: int
    handler: str  # vide, soun, …
    timescale: int
    codec: str  # sample entry four-cc: avc1, hvc1, mp4a, …
    width: int  # tkhd: the presentation size
    height: int
    coded_width: int  # the visual sample entry's
    coded_height: int
    avc_profile: int | None  # AVCProfileIndication from avcC
    default_sample_duration: int
    default_sample_size: int


@dataclass
class SegmentInfo:
    sequence_numbers: list[int] = field(default_factory=list)
    track_id: int = 0
    base_decode_time: int = 0
    samples: int = 0
    duration: int = 0  # in the track's timescale
    mdat_bytes: int = 0


def parse_init(data: bytes) -> InitInfo:
    """An initialization segment: ftyp then moov with exactly one track and an mvex/trex for it."""
    boxes = list(iter_boxes(data))
    if not boxes or boxes[0].type != "ftyp":
        raise Fmp4Error("init segment does not start with 'ftyp'")
    for b in boxes:
        _check_tree(data, b)
    top = {b.type: b for b in boxes}
    if "moov" not in top:
        raise Fmp4Error("init segment has no 'moov'")
    moov = _children(data, top["moov"])
    trak = _one(moov, "trak", "moov")
    tk = _children(data, trak)
    tkhd = _one(tk, "tkhd", "trak")
    ver, _, p = _full(data, tkhd, 80)
    track_id = struct.unpack_from(">I", data, p + (16 if ver == 1 else 8))[0]
    wh = p + (32 if ver == 1 else 20) + 8 + 2 + 2 + 2 + 2 + 36
    if tkhd.end - wh < 8:
        raise Fmp4Error("'tkhd' box too short")
    width, height = (v >> 16 for v in struct.unpack_from(">II", data, wh))
    mdia = _children(data, _one(tk, "mdia", "trak"))
    mdhd = _one(mdia, "mdhd", "mdia")
    ver, _, p = _full(data, mdhd, 20)
    timescale = struct.unpack_from(">I", data, p + (16 if ver == 1 else 8))[0]
    if timescale == 0:
        raise Fmp4Error("'mdhd' timescale is 0")
    _, _, p = _full(data, _one(mdia, "hdlr", "mdia"), 8)
    handler = data[p + 4 : p + 8].decode("ascii", "replace")
    stbl = _children(data, _one(_children(data, _one(mdia, "minf", "mdia")), "stbl", "minf"))
    stsd = _one(stbl, "stsd", "stbl")
    _, _, p = _full(data, stsd, 4)
    entries = list(iter_boxes(data, p + 4, stsd.end))
    if not entries:
        raise Fmp4Error("'stsd' has no sample entry")
    entry = entries[0]
    codec = entry.type
    avc_profile = None
    coded_width = coded_height = 0
    if handler == "vide":
        inner = entry.body + 78  # SampleEntry (8) + VisualSampleEntry fields (70)
        if entry.end < inner:
            raise Fmp4Error(f"'{codec}' sample entry too short")
        coded_width, coded_height = struct.unpack_from(">HH", data, entry.body + 24)
        for sub in iter_boxes(data, inner, entry.end):
            if sub.type == "avcC" and sub.size - sub.header >= 4:
                avc_profile = data[sub.body + 1]
    mvex = moov.get("mvex")
    if not mvex:
        raise Fmp4Error("init segment has no 'mvex': not a fragmented MP4")
    trexes = _children(data, mvex[0]).get("trex", [])
    trex = None
    for t in trexes:
        _full(data, t, 20)
        if struct.unpack_from(">I", data, t.body + 4)[0] == track_id:
            trex = t
    if trex is None:
        raise Fmp4Error(f"no 'trex' for track {track_id}")
    dur, size = struct.unpack_from(">II", data, trex.body + 12)
    return InitInfo(
        track_id, handler, timescale, codec, width, height, coded_width, coded_height, avc_profile, dur, size
    )


def parse_segment(data: bytes, init: InitInfo) -> SegmentInfo:
    """A media segment of INIT's track; raises Fmp4Error unless its boxes add up."""
    boxes = list(iter_boxes(data))
    if not boxes:
        raise Fmp4Error("empty segment")
    for b in boxes:
        _check_tree(data, b)
    if boxes[0].type not in ("styp", "sidx", "moof", "emsg", "prft"):
        raise Fmp4Error(f"a media segment does not start with '{boxes[0].type}'")
    info = SegmentInfo()
    first_time: int | None = None
    i = 0
    while i < len(boxes):
        b = boxes[i]
        if b.type != "moof":
            if b.type == "mdat":
                raise Fmp4Error(f"'mdat' at offset {b.start} without a 'moof' before it")
            i += 1
            continue
        if i + 1 >= len(boxes) or boxes[i + 1].type != "mdat":
            raise Fmp4Error(f"'moof' at offset {b.start} is not followed by its 'mdat'")
        mdat = boxes[i + 1]
        t = _fragment(data, b, mdat, init, info)
        first_time = t if first_time is None else first_time
        i += 2
    if not info.sequence_numbers:
        raise Fmp4Error("no 'moof' in the segment")
    info.base_decode_time = first_time or 0
    return info


def _fragment(data: bytes, moof: Box, mdat: Box, init: InitInfo, info: SegmentInfo) -> int:
    kids = _children(data, moof)
    _, _, p = _full(data, _one(kids, "mfhd", "moof"), 4)
    seq = struct.unpack_from(">I", data, p)[0]
    if info.sequence_numbers and seq <= info.sequence_numbers[-1]:
        raise Fmp4Error(f"'mfhd' sequence numbers do not increase ({info.sequence_numbers[-1]} then {seq})")
    info.sequence_numbers.append(seq)
    traf = _children(data, _one(kids, "traf", "moof (one track per fragment)"))
    tfhd = _one(traf, "tfhd", "traf")
    _, flags, p = _full(data, tfhd, 4)
    track = struct.unpack_from(">I", data, p)[0]
    if track != init.track_id:
        raise Fmp4Error(f"fragment of track {track}, the init segment's track is {init.track_id}")
    info.track_id = track
    p += 4
    base = moof.start  # default-base-is-moof, or no base given (single-traf fragments)
    need = sum(n for bit, n in ((1, 8), (2, 4), (8, 4), (0x10, 4), (0x20, 4)) if flags & bit)
    if tfhd.end - p < need:
        raise Fmp4Error("'tfhd' box too short for its flags")
    if flags & 1:
        base = struct.unpack_from(">Q", data, p)[0]
        p += 8
    if flags & 2:
        p += 4
    dflt_dur = init.default_sample_duration
    dflt_size = init.default_sample_size
    if flags & 8:
        dflt_dur = struct.unpack_from(">I", data, p)[0]
        p += 4
    if flags & 0x10:
        dflt_size = struct.unpack_from(">I", data, p)[0]
    tfdt = _one(traf, "tfdt", "traf")
    ver, _, p = _full(data, tfdt, 4)
    if ver == 1:
        if tfdt.end - p < 8:
            raise Fmp4Error("'tfdt' box too short")
        decode_time = struct.unpack_from(">Q", data, p)[0]
    else:
        decode_time = struct.unpack_from(">I", data, p)[0]
    truns = traf.get("trun", [])
    if not truns:
        raise Fmp4Error("'traf' has no 'trun'")
    payload = mdat.size - mdat.header
    total = 0
    for trun in truns:
        _, tf, p = _full(data, trun, 4)
        count = struct.unpack_from(">I", data, p)[0]
        p += 4
        offset = None
        if tf & 1:
            offset = struct.unpack_from(">i", data, p)[0]
            p += 4
        if tf & 4:
            p += 4
        per = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if tf & bit)
        if trun.end - p < per * count:
            raise Fmp4Error(f"'trun' lists {count} samples but is {trun.size} bytes")
        if offset is not None and trun is truns[0] and base + offset != mdat.body:
            raise Fmp4Error(
                f"'trun' data offset points at {base + offset}, the 'mdat' payload at {mdat.body}"
            )
        for _ in range(count):
            dur, size = dflt_dur, dflt_size
            if tf & 0x100:
                dur = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tf & 0x200:
                size = struct.unpack_from(">I", data, p)[0]
                p += 4
            p += 4 * sum(1 for bit in (0x400, 0x800) if tf & bit)
            total += size
            info.duration += dur
        info.samples += count
    if total != payload:
        raise Fmp4Error(f"'trun' sample sizes add up to {total} bytes, the 'mdat' payload is {payload}")
    info.mdat_bytes += payload
    return int(decode_time)
