"""The readiness gate: named stages of checks, each printed PASS/FAIL (or SKIP with the reason) as
it runs, with the stage's elapsed time, as Traffic Control's CDN-in-a-Box readiness check does.
Everything recorded here ends up in the report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console


@dataclass
class Check:
    stage: str
    name: str
    ok: bool | None  # None: skipped
    detail: str
    seconds: float  # since the gate opened

    @property
    def status(self) -> str:
        return "SKIP" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Gate:
    console: Console
    started: float = field(default_factory=time.monotonic)
    checks: list[Check] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # what the report plots
    stage: str = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextlib.contextmanager
    def step(self, name: str, note: str = "") -> Iterator[None]:
        """A stage: a heading, a spinner while it runs, its duration recorded. An exception inside
        is recorded as a failed check (the stages after it still run, so the report is whole)."""
        self.stage = name
        n = len(self.stages) + 1
        self.console.print(f"[bold cyan][{n:>2}] {name}[/]" + (f" [dim]{note}[/]" if note else ""))
        t0 = time.monotonic()
        try:
            with self.console.status(f"[{n}] {name} …"):
                yield
        except Exception as exc:
            self.check(f"{name} ran to the end", False, f"{type(exc).__name__}: {exc}")
        finally:
            secs = time.monotonic() - t0
            self.stages.append({"name": name, "seconds": round(secs, 1)})
            self.console.print(f"     [dim]{name}: {secs:.1f} s[/]")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(self.stage, name, bool(ok), detail, round(self.elapsed(), 1)))
        colour = "green" if ok else "red"
        self.console.print(
            f"     [{colour}]{'PASS' if ok else 'FAIL'}[/] {name}"
            + (f" [dim]({detail})[/]" if detail else "")
        )
        return bool(ok)

    def skip(self, name: str, why: str) -> None:
        self.checks.append(Check(self.stage, name, None, why, round(self.elapsed(), 1)))
        self.console.print(f"     [yellow]SKIP[/] {name} [dim]({why})[/]")

    def progress(self, text: str) -> None:
        self.console.print(f"     [dim]… {text}[/]")

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks) and any(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.elapsed(), 1),
            "stages": self.stages,
            "checks": [asdict(c) | {"status": c.status} for c in self.checks],
            **self.data,
        }
