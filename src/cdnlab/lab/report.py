"""The lab's report: a terminal summary, ``report.json`` and ``report.html`` (inline SVG plots: hit
ratio per appliance, bytes per tier, QoE per client, the failover timeline; nothing fetched at view
time)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cdnlab.lab.gate import Gate

_COLOURS = ("#4472c4", "#ed7d31", "#a5a5a5", "#ffc000", "#5b9bd5", "#70ad47", "#264478", "#9e480e")


def write(gate: Gate, out: Path, console: Console) -> None:
    data = gate.as_dict()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "report.html").write_text(render_html(data))
    table = Table(title="cdnlab lab readiness", show_lines=False)
    for col in ("stage", "check", "result", "at"):
        table.add_column(col, no_wrap=col != "check")
    for c in data["checks"]:
        colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}[c["status"]]
        table.add_row(c["stage"], c["name"], f"[{colour}]{c['status']}[/]", f"{c['seconds']:.0f}s")
    console.print(table)
    passed = sum(c["status"] == "PASS" for c in data["checks"])
    skipped = sum(c["status"] == "SKIP" for c in data["checks"])
    colour = "green" if data["ok"] else "red"
    console.print(
        f"[bold {colour}]{passed}/{len(data['checks'])} checks passed"
        + (f", {skipped} skipped" if skipped else "")
        + f" in {data['seconds']:.0f} s[/]"
    )
    console.print(f"report: {out / 'report.html'} and {out / 'report.json'}")


def _bars(title: str, values: dict[str, float], fmt: str = "{:.0%}", vmax: float | None = None) -> str:
    if not values:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    vmax = vmax or max(max(values.values()), 1e-9)
    row, width = 24, 420
    h = row * len(values) + 10
    parts = [f'<svg width="{width + 340}" height="{h}" role="img" aria-label="{html.escape(title)}">']
    for i, (label, v) in enumerate(sorted(values.items())):
        y = 5 + i * row
        w = max(1.0, width * v / vmax)
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>')
        parts.append(f'<rect x="240" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{_COLOURS[0]}"/>')
        parts.append(f'<text x="{245 + w:.1f}" y="{y + 15}" font-size="12">{fmt.format(v)}</text>')
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _stacked(title: str, rows: dict[str, dict[str, float]]) -> str:
    if not rows:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    keys = sorted({k for r in rows.values() for k in r})
    vmax = max(sum(r.values()) for r in rows.values()) or 1
    row, width = 24, 420
    parts = [f'<svg width="{width + 380}" height="{row * len(rows) + 40}">']
    for i, (label, r) in enumerate(sorted(rows.items())):
        y, x = 5 + i * row, 240.0
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>')
        for j, k in enumerate(keys):
            w = width * r.get(k, 0) / vmax
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{_COLOURS[j % 8]}"/>'
            )
            x += w
        parts.append(
            f'<text x="{x + 5:.1f}" y="{y + 15}" font-size="12">{sum(r.values()) / 1e6:.1f} MB</text>'
        )
    ly = row * len(rows) + 20
    for j, k in enumerate(keys):
        parts.append(f'<rect x="{240 + j * 90}" y="{ly}" width="12" height="12" fill="{_COLOURS[j % 8]}"/>')
        parts.append(f'<text x="{256 + j * 90}" y="{ly + 11}" font-size="12">{html.escape(k or "?")}</text>')
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _timeline(events: list[dict[str, Any]]) -> str:
    if not events:
        return "<h3>Failover timeline</h3><p>no failover drill ran</p>"
    t_end = max(e["t"] for e in events) or 1
    width = 600
    parts = [f'<svg width="{width + 60}" height="{40 + 22 * len(events)}">']
    parts.append(f'<line x1="10" y1="20" x2="{width + 10}" y2="20" stroke="#333"/>')
    for i, e in enumerate(events):
        x = 10 + width * e["t"] / t_end
        parts.append(
            f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="26" stroke="{_COLOURS[1]}" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="10" y="{44 + 22 * i}" font-size="12">{e["t"]:6.2f} s  {html.escape(e["event"])}</text>'
        )
    parts.append("</svg>")
    return "<h3>Failover timeline (appliance killed mid-session)</h3>" + "".join(parts)


def render_html(data: dict[str, Any]) -> str:
    prom = data.get("prometheus") or {}
    qoe = data.get("qoe") or {}
    rows = "".join(
        f'<tr class="{c["status"].lower()}"><td>{html.escape(c["stage"])}</td>'
        f"<td>{html.escape(c['name'])}</td>"
        f"<td>{c['status']}</td><td>{html.escape(str(c['detail']))}</td><td>{c['seconds']:.0f}</td></tr>"
        for c in data.get("checks", [])
    )
    startup = {k: (q.get("startup_time_s") or 0) * 1000 for k, q in qoe.items()}
    bitrate = {k: (q.get("avg_bitrate_bps") or 0) / 1000 for k, q in qoe.items()}
    stages = {s["name"]: s["seconds"] for s in data.get("stages", [])}
    passed = sum(c["status"] == "PASS" for c in data.get("checks", []))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cdnlab lab report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; font-size: 13px; vertical-align: top; }}
tr.pass td:nth-child(3) {{ color: #080; }} tr.fail td:nth-child(3) {{ color: #c00; font-weight: bold; }}
tr.skip td:nth-child(3) {{ color: #a60; }}
</style></head><body>
<h1>cdnlab lab: {"ready" if data.get("ok") else "NOT ready"}</h1>
<p>{passed}/{len(data.get("checks", []))} checks passed in {data.get("seconds", 0):.0f} s.
Topology: {html.escape(json.dumps(data.get("topology")))}</p>
{_bars("Hit ratio per appliance (Prometheus)", prom.get("hit_ratio", {}), vmax=1.0)}
{_stacked("Bytes sent per source tier (Prometheus)", prom.get("bytes_by_tier", {}))}
{_bars("QoE: startup time per client session (ms)", startup, "{:.0f} ms")}
{_bars("QoE: average bitrate per client session (kbit/s)", bitrate, "{:.0f}")}
{_timeline(data.get("failover", []))}
{_bars("Wall time per stage (s)", stages, "{:.1f} s")}
<h2>Checks</h2>
<table><tr><th>stage</th><th>check</th><th>result</th><th>detail</th><th>at (s)</th></tr>{rows}</table>
</body></html>
"""
