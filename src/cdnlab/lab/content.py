"""The lab's content: DASH titles made with ffmpeg (fragmented MP4 segments and an ``.mpd`` per
title, several bitrates), a poster image per title and a few small assets, uploaded to the S3
origin with each object's SHA-256 in ``x-amz-meta-sha256`` (the edges verify it).

Generated once and cached (``CACHE_DIR/content-KEY``): a warm ``lab up`` only uploads.

Layout (the control plane's catalog names segments ``seg-{n:05d}.m4s`` from 1)::

    content/t0001/manifest.mpd
    content/t0001/{240p,480p,720p}/init.m4s, seg-00001.m4s …
    images/t0001/poster.png
    static/app.js, static/style.css, static/favicon.ico
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdnlab.lab.hosts import CACHE_DIR, LabError

SEGMENT_SECONDS = 2
# profile → (width, height, video bitrate kbit/s)
PROFILES: dict[str, tuple[int, int, int]] = {
    "240p": (426, 240, 300),
    "480p": (854, 480, 1000),
    "720p": (1280, 720, 2500),
}
# Bump when the recipe changes in a way the arguments do not show.
_RECIPE = "1"


@dataclass(frozen=True)
class Content:
    root: Path
    titles: tuple[str, ...]
    segments: int  # per track
    digests: dict[str, str]  # "/key" → SHA-256 hex

    def catalog_toml(self) -> str:
        """The control plane's title catalog for these titles (docs/control.md)."""
        out = []
        for title in self.titles:
            tracks = []
            for profile, (_, _, kbps) in sorted(PROFILES.items(), key=lambda p: -p[1][2]):
                size = sum(
                    (self.root / f"content/{title}/{profile}/seg-{n:05d}.m4s").stat().st_size
                    for n in range(1, self.segments + 1)
                )
                # the bandwidth a player needs: the real mean bitrate, not the nominal one
                bps = max(int(size * 8 / (self.segments * SEGMENT_SECONDS)), kbps * 1000 // 2)
                tracks.append(
                    f'  {{profile = "{profile}", bandwidth = {bps}, segments = {self.segments}, '
                    f"segment_duration = {float(SEGMENT_SECONDS)}}}"
                )
            out.append(f"[titles.{title}]\ntracks = [\n" + ",\n".join(tracks) + "\n]\n")
        return "\n".join(out)

    def segment_keys(self, title: str) -> list[str]:
        return sorted(k for k in self.digests if k.startswith(f"/content/{title}/") and "/seg-" in k)


def _key(titles: int, seconds: int) -> str:
    blob = json.dumps([_RECIPE, titles, seconds, SEGMENT_SECONDS, sorted(PROFILES.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_content(
    titles: int = 3,
    seconds: int = 16,
    cache_dir: Path = CACHE_DIR,
    progress: Callable[[str], None] = lambda _: None,
) -> Content:
    """The cached content set, made with ffmpeg the first time (a few seconds per title)."""
    root = Path(cache_dir) / f"content-{_key(titles, seconds)}"
    names = tuple(f"t{i:04d}" for i in range(1, titles + 1))
    segments = seconds // SEGMENT_SECONDS
    index = root / ".cdnlab-content.json"
    if index.exists():
        return Content(root, names, segments, json.loads(index.read_text()))
    if shutil.which("ffmpeg") is None:
        raise LabError("ffmpeg is not installed (Debian package ffmpeg; `make lab` installs it)")
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i, title in enumerate(names):
        progress(f"ffmpeg: {title}, {seconds} s of test video in {len(PROFILES)} bitrates")
        _encode_title(
            tmp / "content" / title, seconds, pattern=("testsrc2", "smptebars", "rgbtestsrc")[i % 3]
        )
        _poster(tmp / "images" / title / "poster.png", title)
    static = tmp / "static"
    static.mkdir(parents=True)
    (static / "app.js").write_text("// cdnlab lab player shell\n" + "console.log('cdnlab');\n" * 200)
    (static / "style.css").write_text("body { font-family: sans-serif; }\n" * 100)
    (static / "favicon.ico").write_bytes(hashlib.sha512(b"favicon").digest() * 16)
    digests = {
        "/" + p.relative_to(tmp).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(tmp.rglob("*"))
        if p.is_file()
    }
    for title in names:
        for profile in PROFILES:
            have = len([k for k in digests if k.startswith(f"/content/{title}/{profile}/seg-")])
            if have != segments:
                raise LabError(f"ffmpeg made {have} segments for {title}/{profile}, expected {segments}")
    (tmp / ".cdnlab-content.json").write_text(json.dumps(digests, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return Content(root, names, segments, digests)


def _ffmpeg(args: list[str], log: Path) -> None:
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stderr)
        raise LabError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def _encode_title(dest: Path, seconds: int, pattern: str) -> None:
    """One ffmpeg run: the source once, scaled per profile, each a DASH representation in its own
    directory; then one MPD for the title that names them all."""
    dest.mkdir(parents=True)
    fps = 25
    splits = len(PROFILES)
    graph = f"{pattern}=size=1280x720:rate={fps}:duration={seconds},split={splits}" + "".join(
        f"[s{i}]" for i in range(splits)
    )
    graph += "".join(f";[s{i}]scale={w}:{h}[v{i}]" for i, (w, h, _) in enumerate(PROFILES.values()))
    args = ["-filter_complex", graph]
    for i, (profile, (_, _, kbps)) in enumerate(PROFILES.items()):
        (dest / profile).mkdir()
        args += [
            "-map",
            f"[v{i}]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            f"{kbps}k",
            "-maxrate",
            f"{kbps}k",
            "-bufsize",
            f"{kbps * 2}k",
            "-g",
            str(fps * SEGMENT_SECONDS),
            "-keyint_min",
            str(fps * SEGMENT_SECONDS),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "dash",
            "-seg_duration",
            str(SEGMENT_SECONDS),
            "-use_template",
            "1",
            "-use_timeline",
            "0",
            "-init_seg_name",
            "init.m4s",
            "-media_seg_name",
            "seg-$Number%05d$.m4s",
            str(dest / profile / "track.mpd"),
        ]
    _ffmpeg(args, dest / "ffmpeg.log")
    (dest / "manifest.mpd").write_text(_mpd(seconds))


def _mpd(seconds: int) -> str:
    reps = "\n".join(
        f'      <Representation id="{p}" bandwidth="{kbps * 1000}" width="{w}" height="{h}" '
        f'codecs="avc1.42c01e" mimeType="video/mp4">\n'
        f'        <SegmentTemplate timescale="1000" duration="{SEGMENT_SECONDS * 1000}" startNumber="1" '
        f'initialization="{p}/init.m4s" media="{p}/seg-$Number%05d$.m4s"/>\n'
        "      </Representation>"
        for p, (w, h, kbps) in PROFILES.items()
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011" '
        f'mediaPresentationDuration="PT{seconds}S" minBufferTime="PT{SEGMENT_SECONDS}S">\n'
        '  <Period id="0" start="PT0S">\n'
        '    <AdaptationSet contentType="video" segmentAlignment="true">\n'
        f"{reps}\n"
        "    </AdaptationSet>\n  </Period>\n</MPD>\n"
    )


def _poster(dest: Path, title: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=1:duration=1", "-frames:v", "1", str(dest)],
        dest.with_suffix(".log"),
    )


def upload(content: Content, s3: object, bucket: str, skip_existing: bool = True) -> int:
    """Put every object into BUCKET with its SHA-256 as ``x-amz-meta-sha256``; returns how many
    were uploaded (objects already there with the same digest are skipped)."""
    have: dict[str, str] = {}
    if skip_existing:
        paginator = s3.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                have["/" + obj["Key"]] = obj.get("ETag", "")
    n = 0
    for key, digest in content.digests.items():
        path = content.root / key.lstrip("/")
        if key in have and have[key].strip('"') == hashlib.md5(path.read_bytes()).hexdigest():
            continue
        s3.put_object(  # type: ignore[attr-defined]
            Bucket=bucket,
            Key=key.lstrip("/"),
            Body=path.read_bytes(),
            ContentType=_content_type(key),
            Metadata={"sha256": digest},
        )
        n += 1
    return n


def _content_type(key: str) -> str:
    for suffix, ctype in (
        (".mpd", "application/dash+xml"),
        (".m4s", "video/iso.segment"),
        (".png", "image/png"),
        (".js", "text/javascript"),
        (".css", "text/css"),
        (".ico", "image/x-icon"),
    ):
        if key.endswith(suffix):
            return ctype
    return "application/octet-stream"
