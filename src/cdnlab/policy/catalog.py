"""The policy catalog's typed model and loader: TTL classes, cache-key query rules, origin-request headers.

The data lives in ``catalog.toml`` beside this file. A bad value is reported as one line naming the
key (``CatalogError``), for example ``class[1].default_ttl: must lie between min_ttl and max_ttl``.
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdnlab.signing import SIGNATURE_PARAMS

DEFAULT_PATH = Path(__file__).with_name("catalog.toml")
# CloudFront allows 25 cache behaviours per distribution by default; one is the default behaviour.
MAX_ORDERED_PATTERNS = 24
ONE_YEAR = 31_536_000

Ttl = Annotated[int, Field(ge=0, le=ONE_YEAR * 10)]
_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_\-.$/~\"'@:+*?&]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


class CatalogError(ValueError):
    """One line naming the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _directive(cache_control: str, name: str) -> str | None:
    """The value of one Cache-Control directive ("" for a bare one), or None if absent."""
    for part in cache_control.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A CloudFront path pattern as an anchored regex: ``*`` any run, ``?`` one character."""
    if not pattern.startswith(("/", "*")):
        pattern = "/" + pattern
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rf"\A{body}\Z", re.DOTALL)


CODINGS = ("br", "gzip")


class ImageOpt(_Strict):
    """Image optimisation at the edge when an image is stored (opt-in per class)."""

    max_width: int = Field(ge=1, le=16384)
    quality: int = Field(default=82, ge=1, le=100)
    # keep: same format as upstream; jpeg/webp: re-encoded (Content-Type follows) for every client.
    format: Literal["keep", "jpeg", "webp"] = "keep"


class TtlClass(_Strict):
    """One kind of content: where it lives, how long it is kept, what the edge tells clients."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    patterns: list[str] = Field(min_length=1)
    min_ttl: Ttl
    default_ttl: Ttl
    max_ttl: Ttl
    cache_control: str = Field(min_length=1)
    cacheable: bool = True
    compress: bool = False
    # The codings the edge offers for this class, best first (``compress = ["br", "gzip"]`` in the
    # file; ``compress = true`` means both). CloudFront only takes the on/off flag.
    codings: tuple[Literal["br", "gzip"], ...] = ()
    minify_json: bool = False
    image: ImageOpt | None = None
    range: bool = False
    signed: bool = False
    query_key: bool = False
    immutable: bool = False
    must_revalidate: bool = False
    stale_while_revalidate: Ttl = 0

    @model_validator(mode="before")
    @classmethod
    def _compress_list(cls, data: Any) -> Any:
        """``compress`` may be a flag or the list of codings; both end as ``compress`` + ``codings``."""
        if not isinstance(data, dict):
            return data
        value = data.get("compress")
        if "codings" in data:
            # Only a dumped model carries both (compress a flag that agrees with codings).
            if not isinstance(value, bool) or value != bool(data["codings"]):
                raise ValueError("codings: unknown key (list the codings in compress)")
            return data
        if isinstance(value, list):
            for c in value:
                if c not in CODINGS:
                    raise ValueError(f"compress: unknown coding {c!r} (known: br, gzip)")
            if len(set(value)) != len(value):
                raise ValueError("compress: a coding is listed twice")
            return {**data, "compress": bool(value), "codings": tuple(value)}
        if value is True:
            return {**data, "codings": CODINGS}
        if value is not None and value is not False:
            raise ValueError('compress: must be true, false or a list of codings such as ["br", "gzip"]')
        return data

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not _PATTERN_CHARS.match(p):
                raise ValueError(f"pattern {p!r} has characters CloudFront path patterns do not allow")
        if len(set(v)) != len(v):
            raise ValueError("duplicate pattern")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TtlClass:
        if not self.min_ttl <= self.default_ttl <= self.max_ttl:
            raise ValueError("default_ttl: must lie between min_ttl and max_ttl")
        if not self.cacheable and self.max_ttl != 0:
            raise ValueError("max_ttl: must be 0 when cacheable is false")
        if not self.cacheable and self.query_key:
            raise ValueError("query_key: a class that is never stored has no cache key")
        if not self.cacheable and self.minify_json:
            raise ValueError("minify_json: a class that is never stored is never rewritten")
        if not self.cacheable and self.image is not None:
            raise ValueError("image: a class that is never stored is never rewritten")
        cc = self.cache_control
        max_age = _directive(cc, "max-age")
        if max_age is not None and max_age != str(self.default_ttl):
            raise ValueError(f"cache_control: max-age={max_age} but default_ttl is {self.default_ttl}")
        if self.immutable != (_directive(cc, "immutable") is not None):
            raise ValueError("immutable: flag and the cache_control 'immutable' directive disagree")
        if self.must_revalidate != (_directive(cc, "must-revalidate") is not None):
            raise ValueError("must_revalidate: flag and the 'must-revalidate' directive disagree")
        swr = _directive(cc, "stale-while-revalidate")
        if str(self.stale_while_revalidate or "") != (swr or ""):
            raise ValueError("stale_while_revalidate: value and the cache_control directive disagree")
        return self

    @cached_property
    def _regexes(self) -> list[re.Pattern[str]]:
        return [pattern_regex(p) for p in self.patterns]

    def matches(self, path: str) -> bool:
        return any(r.match(path) for r in self._regexes)


class CacheKeyRules(_Strict):
    query_params: list[str] = Field(min_length=1)

    @field_validator("query_params")
    @classmethod
    def _params(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("duplicate query parameter")
        for p in v:
            if not p or p in SIGNATURE_PARAMS:
                raise ValueError(f"{p!r} cannot be a cache-key parameter (signature parameters are dropped)")
        return v


class OriginRequestRules(_Strict):
    headers: list[str] = Field(default_factory=list)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        for h in v:
            if not _HEADER_NAME.match(h):
                raise ValueError(f"{h!r} is not an HTTP header name")
            if h.lower() == "range":
                raise ValueError("Range is always forwarded; it must not be listed")
        return v


class Catalog(_Strict):
    cache_key: CacheKeyRules
    origin_request: OriginRequestRules = Field(default_factory=OriginRequestRules)
    classes: list[TtlClass] = Field(alias="class", min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _shape(self) -> Catalog:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("class: duplicate class name")
        if self.classes[-1].patterns != ["*"]:
            raise ValueError("class: the last class must be the catch-all with patterns = ['*']")
        for c in self.classes[:-1]:
            if "*" in c.patterns:
                raise ValueError(f"class.{c.name}.patterns: only the last class may use the catch-all '*'")
        if len(self.ordered_patterns()) > MAX_ORDERED_PATTERNS:
            raise ValueError(f"class: more than {MAX_ORDERED_PATTERNS} patterns (CloudFront behaviour quota)")
        return self

    @property
    def default(self) -> TtlClass:
        """The catch-all class (CloudFront's default behaviour)."""
        return self.classes[-1]

    def ordered_patterns(self) -> list[tuple[str, TtlClass]]:
        """(pattern, class) in precedence order, the catch-all left out: CloudFront's ordered behaviours."""
        return [(p, c) for c in self.classes[:-1] for p in c.patterns]

    def by_name(self, name: str) -> TtlClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def classify(self, path: str) -> TtlClass:
        """The first class whose pattern matches PATH (the catch-all if none does)."""
        for c in self.classes[:-1]:
            if c.matches(path):
                return c
        return self.default

    def cache_key_query(self, query: str) -> str:
        """Only the keyed parameters, in catalog order, values in request order; the rest dropped."""
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for name in self.cache_key.query_params for k, v in pairs if k == name]
        return urlencode(kept)

    def key_for(self, path: str, query: str = "") -> str:
        """The cache key of a request: the path, plus the keyed query when its class keys on it."""
        ttl_class = self.classify(path)
        q = self.cache_key_query(query) if ttl_class.query_key else ""
        return f"{path}?{q}" if q else path


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # "class.1.default_ttl" reads better as "class[1].default_ttl".
    parts: list[str] = []
    for p in loc:
        if p.isdigit() and parts:
            parts[-1] += f"[{p}]"
        else:
            parts.append(p)
    key = ".".join(parts)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    # A model-level message may already start with the key it concerns ("default_ttl: ...").
    head, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_.\[\]0-9]+", head):
        key = f"{key}.{head}" if key else head
        msg = rest
    return f"{key or '(top level)'}: {msg}"


def from_mapping(data: dict) -> Catalog:
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(_first_error(exc)) from None


def load(path: Path | str | None = None) -> Catalog:
    """Read and validate a catalog file (the packaged one by default)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise CatalogError(f"{p}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{p}: not valid TOML: {exc}") from None
    return from_mapping(data)
