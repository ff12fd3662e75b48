"""The fragmented-MP4 parser and the DASH profile check (``cdnlab.media``): minimal valid fMP4
built here box by box, each way of breaking it, and — with ffmpeg installed — real DASH
segments from the lab's recipe."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from cdnlab.media.dash import Representation, check_init, check_segment, parse_mpd, representation_for
from cdnlab.media.fmp4 import Fmp4Error, iter_boxes, parse_init, parse_segment


def box(kind: str, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind.encode()) + body


def full(kind: str, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def init_segment(
    track: int = 1, timescale: int = 12800, w: int = 426, h: int = 240, profile: int = 66
) -> bytes:
    tkhd = full(
        "tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, track, 0, 0),
        bytes(8 + 8 + 36),
        struct.pack(">II", w << 16, h << 16),
    )
    mdhd = full("mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full("hdlr", 0, 0, struct.pack(">I4s", 0, b"vide"), bytes(12), b"video\0")
    avcc = box("avcC", bytes([1, profile, 0xC0, 30, 0xFF, 0xE0]))
    visual = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", w, h) + bytes(50)
    stsd = full("stsd", 0, 0, struct.pack(">I", 1), box("avc1", visual, avcc))
    stbl = box("stbl", stsd, full("stts", 0, 0, bytes(4)), full("stsc", 0, 0, bytes(4)),
               full("stsz", 0, 0, bytes(8)), full("stco", 0, 0, bytes(4)))  # fmt: skip
    minf = box("minf", full("vmhd", 0, 1, bytes(8)), stbl)
    trak = box("trak", tkhd, box("mdia", mdhd, hdlr, minf))
    trex = full("trex", 0, 0, struct.pack(">IIIII", track, 1, 0, 0, 0))
    moov = box("moov", full("mvhd", 0, 0, bytes(96)), trak, box("mvex", trex))
    return box("ftyp", b"iso6", bytes(4), b"iso6dash") + moov


def media_segment(
    sizes: list[int], track: int = 1, dur: int = 512, seq: int = 1, mdat_extra: int = 0, offset_fix: int = 0
) -> bytes:
    def moof(data_offset: int) -> bytes:
        tfhd = full("tfhd", 0, 0x020000, struct.pack(">I", track))
        tfdt = full("tfdt", 1, 0, struct.pack(">Q", 0))
        samples = b"".join(struct.pack(">II", dur, s) for s in sizes)
        trun = full("trun", 0, 0x000301, struct.pack(">Ii", len(sizes), data_offset), samples)
        return box("moof", full("mfhd", 0, 0, struct.pack(">I", seq)), box("traf", tfhd, tfdt, trun))

    size = len(moof(0))
    payload = bytes(sum(sizes) + mdat_extra)
    return box("styp", b"msdh", bytes(4), b"msdhmsix") + moof(size + 8 + offset_fix) + box("mdat", payload)


MPD = b"""<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
 <Period><AdaptationSet contentType="video">
  <Representation id="240p" bandwidth="300000" width="426" height="240" codecs="avc1.42c01e">
   <SegmentTemplate timescale="1000" duration="2000"
    initialization="240p/init.m4s" media="240p/seg-$Number%05d$.m4s"/>
  </Representation>
  <Representation id="720p" bandwidth="2500000" width="1280" height="720" codecs="avc1.42c01e">
   <SegmentTemplate timescale="1000" duration="2000"
    initialization="720p/init.m4s" media="720p/seg-$Number%05d$.m4s"/>
  </Representation>
 </AdaptationSet></Period></MPD>"""


def rep(profile: str = "240p") -> Representation:
    return next(r for r in parse_mpd(MPD) if r.id == profile)


def test_valid_minimal_fmp4() -> None:
    init = parse_init(init_segment())
    assert (init.track_id, init.timescale, init.codec, init.width, init.height) == (
        1,
        12800,
        "avc1",
        426,
        240,
    )
    assert init.avc_profile == 66
    seg = parse_segment(media_segment([1000, 2000, 3000] * 10), init)
    assert (seg.track_id, seg.samples, seg.duration, seg.mdat_bytes) == (1, 30, 30 * 512, 60000)
    check_init(init, rep())
    data = media_segment([1000, 2000, 3000] * 10)
    check_segment(seg, init, rep(), len(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (media_segment([100, 200], mdat_extra=1), "add up to 300 bytes, the 'mdat' payload is 301"),
        (media_segment([100, 200], track=2), "fragment of track 2"),
        (media_segment([100, 200], offset_fix=4), "data offset"),
        (media_segment([100, 200])[:-10], "claims"),  # truncated: mdat overruns the file
        (media_segment([100, 200]) + b"\0\0\0", "stray bytes"),
        (media_segment([100, 200]).replace(b"tfdt", b"xfdt"), "one 'tfdt'"),
        (media_segment([100, 200]).replace(b"mdat", b"free"), "not followed by its 'mdat'"),
        (box("styp", b"msdh", bytes(4)), "no 'moof'"),
        (box("mdat", bytes(10)), "does not start with 'mdat'"),
    ],
)
def test_broken_segments_rejected(data: bytes, message: str) -> None:
    init = parse_init(init_segment())
    with pytest.raises(Fmp4Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_segment(data, init)


def test_box_sizes_must_fit() -> None:
    data = struct.pack(">I4s", 100, b"moov") + bytes(20)
    with pytest.raises(Fmp4Error, match="claims 100 bytes"):
        list(iter_boxes(data))
    with pytest.raises(Fmp4Error, match="claims 4 bytes"):
        list(iter_boxes(struct.pack(">I4s", 4, b"free")))
    inner = box("moov", struct.pack(">I4s", 50, b"trak"))
    with pytest.raises(Fmp4Error):
        parse_init(box("ftyp", b"iso6", bytes(4)) + inner)


def test_init_checks() -> None:
    with pytest.raises(Fmp4Error, match="start with 'ftyp'"):
        parse_init(init_segment()[24:])
    no_mvex = init_segment().replace(b"mvex", b"free")
    with pytest.raises(Fmp4Error, match="mvex"):
        parse_init(no_mvex)
    with pytest.raises(Fmp4Error, match="picture 1280x720"):
        check_init(parse_init(init_segment(w=1280, h=720)), rep("240p"))
    with pytest.raises(Fmp4Error, match="AVC profile 100"):
        check_init(parse_init(init_segment(profile=100)), rep("240p"))
    hevc = init_segment().replace(b"avc1", b"hvc1")
    with pytest.raises(Fmp4Error, match="codec hvc1"):
        check_init(parse_init(hevc), rep("240p"))


def test_segment_against_profile() -> None:
    init = parse_init(init_segment())
    long_seg = media_segment([100] * 100)  # 100 × 512 / 12800 = 4 s, the MPD says 2 s
    with pytest.raises(Fmp4Error, match=r"lasts 4\.000 s"):
        check_segment(parse_segment(long_seg, init), init, rep(), len(long_seg))
    fat = media_segment([20000] * 50)  # 1 MB in 2 s = 4 Mbit/s against 300 kbit/s
    with pytest.raises(Fmp4Error, match="bitrate"):
        check_segment(parse_segment(fat, init), init, rep("240p"), len(fat))
    check_segment(parse_segment(fat, init), init, rep("720p"), len(fat))


def test_mpd_templates() -> None:
    reps = parse_mpd(MPD)
    assert [r.id for r in reps] == ["240p", "720p"]
    mpd_key = "/content/t1/manifest.mpd"
    assert representation_for(reps, mpd_key, "/content/t1/720p/seg-00012.m4s").id == "720p"
    assert representation_for(reps, mpd_key, "/content/t1/240p/init.m4s").id == "240p"
    assert representation_for(reps, mpd_key, "/content/t1/480p/seg-00001.m4s") is None
    with pytest.raises(Fmp4Error, match="not XML"):
        parse_mpd(b"<MPD")
    with pytest.raises(Fmp4Error, match="no Representation"):
        parse_mpd(b"<MPD/>")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (Debian package ffmpeg)")
def test_real_dash_segments_from_ffmpeg(tmp_path_factory: pytest.TempPathFactory) -> None:
    from cdnlab.lab.content import ensure_content

    # The same content set (and cache) as the fill integration test: ffmpeg runs once per session.
    content = ensure_content(
        titles=2, seconds=8, cache_dir=tmp_path_factory.getbasetemp() / "fill-content-cache"
    )
    title = Path(content.root) / "content" / content.titles[0]
    reps = parse_mpd((title / "manifest.mpd").read_bytes())
    mpd_key = f"/content/{content.titles[0]}/manifest.mpd"
    inits = {}
    for r in reps:
        inits[r.id] = parse_init((title / r.id / "init.m4s").read_bytes())
        check_init(inits[r.id], r)
        for seg in sorted((title / r.id).glob("seg-*.m4s")):
            data = seg.read_bytes()
            key = f"/content/{content.titles[0]}/{r.id}/{seg.name}"
            assert representation_for(reps, mpd_key, key) == r
            check_segment(parse_segment(data, inits[r.id]), inits[r.id], r, len(data))
    # A 720p segment where the 240p one should be: its bitrate gives it away.
    big = (title / "720p" / "seg-00001.m4s").read_bytes()
    low = next(r for r in reps if r.id == "240p")
    with pytest.raises(Fmp4Error, match="bitrate"):
        check_segment(parse_segment(big, inits["240p"]), inits["240p"], low, len(big))
    with pytest.raises(Fmp4Error, match="picture"):
        check_init(inits["720p"], low)
