"""The steering manifest (seed 003 §2.4), shared by the control plane (which writes it) and the
player (which reads it). Imports neither ``control`` nor ``edge``.

Shape decision: ``video_tracks[].cdn_urls`` are per-track *base* URLs (best first, the CloudFront
URL last), and ``video_tracks[].segments`` are signed references relative to any of them. A segment
URL is ``cdn_urls[i] + segments[n]``. This works because the signature (``cdnlab.signing``) covers
the path, not the host: one signed list serves every endpoint, so the manifest grows with
segments + endpoints rather than segments × endpoints, and the control plane can cache the signed
list per title, profile and expiry bucket.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

EndpointKind = Literal["oca", "cloudfront"]


class Endpoint(BaseModel):
    """One place the title can be fetched from, in rank order."""

    url: str = Field(description="scheme://host[:port], content served at the root")
    kind: EndpointKind
    appliance_id: str | None = None
    site: str | None = None
    score: float | None = Field(default=None, description="seed 000 score (0–100); None for CloudFront")
    holds_title: bool | None = None


class VideoTrack(BaseModel):
    profile: str
    bandwidth: int = Field(description="bits per second the track needs")
    segment_duration: float = Field(description="seconds of media per segment")
    cdn_urls: list[str] = Field(description="track base URLs ending in '/', best first, CloudFront last")
    segments: list[str] = Field(description="signed segment references relative to a cdn_urls entry")


class ClientInfo(BaseModel):
    address: str
    site: str | None = Field(description="site (cache group) the client maps to")
    matched_by: Literal["coverage-zone", "default"]
    prefix: str | None = None


class SteeringManifest(BaseModel):
    title: str
    expires_at: int = Field(description="UNIX time after which the signed URLs are refused")
    client: ClientInfo
    endpoints: list[Endpoint]
    video_tracks: list[VideoTrack]

    def segment_url(self, track: VideoTrack, endpoint_index: int, segment_index: int) -> str:
        return track.cdn_urls[endpoint_index] + track.segments[segment_index]
