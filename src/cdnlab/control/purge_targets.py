"""What an invalidation names, as pure functions: exact paths, prefixes and wildcard patterns,
the cascade rules between them, and their translation for the two kinds of cache we purge.

The edge's admin ``POST /purge`` knows only ``{"key": …}`` and ``{"prefix": …}``, and CloudFront
only exact paths and a ``*`` at the very end. A wildcard (``*``, ``?``, ``[…]``) is therefore sent
to both as its longest literal prefix: it purges at least everything the pattern matches and
possibly more. Over-purging costs a refill; under-purging serves stale content, so we take the
former (expanding against reported inventories would miss objects filled since the last report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["key", "prefix", "wildcard"]
_WILDCARD = re.compile(r"[*?\[]")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Cascades may chain (manifest → title prefix) but never run away.
MAX_CASCADE_ROUNDS = 8
MAX_TARGETS = 10_000


@dataclass(frozen=True, order=True)
class Target:
    kind: Kind
    path: str

    def edge_body(self) -> dict[str, str]:
        if self.kind == "key":
            return {"key": self.path}
        if self.kind == "prefix":
            return {"prefix": self.path}
        return {"prefix": literal_prefix(self.path)}


def literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first wildcard character."""
    m = _WILDCARD.search(pattern)
    return pattern if m is None else pattern[: m.start()]


def classify(path: str) -> Target:
    """A rule's output: ending in ``/`` is a prefix, containing a wildcard is a pattern."""
    if _WILDCARD.search(path):
        return Target("wildcard", path)
    if path.endswith("/"):
        return Target("prefix", path)
    return Target("key", path)


def check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: paths must start with /")
    if any(c in path for c in "\r\n\t ") or len(path) > 4096:
        raise ValueError(f"{path!r}: no whitespace, at most 4096 characters")
    return path


@dataclass(frozen=True)
class CascadeRule:
    """``match`` is a path template in which ``{name}`` stands for one path segment; every target
    whose path matches it whole adds the ``then`` templates, filled in with the same names."""

    match: str
    then: tuple[str, ...]

    def compiled(self) -> re.Pattern[str]:
        out, pos = [], 0
        for m in _PLACEHOLDER.finditer(self.match):
            out.append(re.escape(self.match[pos : m.start()]))
            out.append(f"(?P<{m.group(1)}>[^/]+)")
            pos = m.end()
        out.append(re.escape(self.match[pos:]))
        return re.compile("".join(out))

    def check(self) -> None:
        names = set(_PLACEHOLDER.findall(self.match))
        check_path(self.match)
        for t in self.then:
            check_path(t)
            missing = set(_PLACEHOLDER.findall(t)) - names
            if missing:
                raise ValueError(f"{t!r} uses {sorted(missing)} which {self.match!r} does not define")


def expand(targets: list[Target], rules: list[CascadeRule]) -> list[Target]:
    """The targets plus everything the cascade rules add, to a fixed point (bounded)."""
    compiled = [(r.compiled(), r.then) for r in rules]
    seen: set[Target] = set(targets)
    frontier = list(targets)
    for _ in range(MAX_CASCADE_ROUNDS):
        added: list[Target] = []
        for t in frontier:
            for rx, then in compiled:
                m = rx.fullmatch(t.path)
                if m is None:
                    continue
                for template in then:
                    new = classify(template.format(**m.groupdict()))
                    if new not in seen:
                        seen.add(new)
                        added.append(new)
        if not added or len(seen) > MAX_TARGETS:
            break
        frontier = added
    return sorted(seen)


def _covered(path: str, prefixes: list[str]) -> bool:
    return any(path.startswith(p) for p in prefixes)


def edge_bodies(targets: list[Target]) -> list[dict[str, str]]:
    """One ``/purge`` body per target, minus those a shorter prefix already covers."""
    prefixes = sorted({t.edge_body()["prefix"] for t in targets if t.kind != "key"}, key=len)
    kept: list[str] = []
    for p in prefixes:
        if not _covered(p, kept):
            kept.append(p)
    keys = sorted({t.path for t in targets if t.kind == "key" and not _covered(t.path, kept)})
    return [{"prefix": p} for p in sorted(kept)] + [{"key": k} for k in keys]


def cloudfront_paths(targets: list[Target]) -> list[str]:
    """CloudFront ``Paths.Items``, deduplicated the same way (``/a/*`` covers ``/a/b``)."""
    return [b["key"] if "key" in b else b["prefix"] + "*" for b in edge_bodies(targets)]
