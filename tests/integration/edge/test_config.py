"""Config file or quick flags (issue 2, daemon point 1; DESIGN.md Interfaces)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from cdnlab.edge.config import quick
from cdnlab.edge.worker import run_dir
from helpers import CDNLAB, Edge, Nginx, RawConn, edge, free_port, sha256

from .edgecheck import assert_hit, assert_miss_stored, config_toml


def test_quick_flags_serve_and_pull_through(shield: Edge, origin: Nginx) -> None:
    """The ``shield`` fixture is started with the quick flags only (--listen, --admin-listen,
    --store, --upstream, --role shield)."""
    data = origin.put("/config/quick.bin", 50_000)
    e = shield
    with RawConn(e.port) as c:
        r = c.get("/config/quick.bin")
        assert r.status == 200 and r.body == data
        assert_miss_stored(r.headers)
        e.wait_stored("/config/quick.bin")
        assert_hit(c.get("/config/quick.bin").headers)
    h = e.health()
    assert h["role"] == "shield" and h["state"] == "serving"
    assert len(h["disks"]) == 1
    assert Path(h["disks"][0]["path"]).is_relative_to(e.store)
    # the store and its index live under --store
    assert any(p.is_file() for p in e.store.rglob("*"))
    assert e.inventory_keys()["/config/quick.bin"]["sha256"] == sha256(data)


def test_config_file_values_are_used(main_edge) -> None:  # type: ignore[no-untyped-def]
    h = main_edge.health()
    assert (h["id"], h["site"], h["role"]) == ("edge-main", "lab-1", "edge")
    assert sorted(d["kind"] for d in h["disks"]) == ["flash", "ram"]


def _run(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CDNLAB, *args], capture_output=True, text=True, timeout=timeout)


def _good(tmp: Path) -> str:
    return config_toml().format(
        port=free_port(), admin=free_port(), store=tmp / "store", base=tmp, upstreams='["http://127.0.0.1:1"]'
    )


BAD = [
    # (name, edit of a good config, the key the one line must name)
    ("unknown-top-key", lambda t: t + "\ncolour = 'red'\n", "colour"),
    (
        "unknown-limits-key",
        lambda t: t.replace("[limits]\n", "[limits]\nheader_timout = 3\n"),
        "limits.header_timout",
    ),
    ("workers-not-int", lambda t: t.replace("workers = 1", 'workers = "many"'), "workers"),
    (
        "negative-timeout",
        lambda t: t.replace("[limits]\n", "[limits]\nheader_timeout = -1\n"),
        "limits.header_timeout",
    ),
    ("tier-kind", lambda t: t.replace('kind = "flash"', 'kind = "tape"'), "tiers.0.kind"),
    ("tier-capacity", lambda t: t.replace('capacity = "1G"', 'capacity = "lots"'), "capacity"),
    ("listen", lambda t: t.replace('listen = ["127.0.0.1:', 'listen = ["nohost'), "listen"),
    ("no-upstreams", lambda t: t.replace('upstreams = ["http://127.0.0.1:1"]\n', ""), "upstreams"),
    (
        "admin-listen",
        lambda t: t.replace('[admin]\nlisten = "127.0.0.1:', '[admin]\nlisten = "127.0.0.1:x'),
        "admin.listen",
    ),
]


@pytest.fixture(scope="module")
def bad_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every bad config (and the quick-flag cases) started at once: interpreter start-up dominates."""
    jobs: dict[str, tuple[list[str], Path]] = {}
    for name, edit, _ in BAD:
        d = tmp_path_factory.mktemp(name)
        cfg = d / "bad.toml"
        cfg.write_text(edit(_good(d)))
        jobs[name] = (["edge", "serve", "--config", str(cfg)], d)
    for name, args, _ in QUICK_BAD:
        d = tmp_path_factory.mktemp(name)
        real = [str(d / "s") if a == "S" else str(d / "c.toml") if a == "C" else a for a in args]
        jobs[name] = (["edge", "serve", *real], d)
    bad = d / "not.toml"
    bad.write_text("this is = = not toml\n")
    jobs["not-toml"] = (["edge", "serve", "--config", str(bad)], d)
    jobs["missing-file"] = (["edge", "serve", "--config", str(d / "missing.toml")], d)
    procs = {
        n: (subprocess.Popen([*CDNLAB, *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), d)
        for n, (a, d) in jobs.items()
    }
    out = {}
    for n, (proc, d) in procs.items():
        try:
            so, se = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            so, se = proc.communicate()
        out[n] = (subprocess.CompletedProcess(proc.args, proc.returncode, so, se), d)
    return out


def _one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.parametrize(("name", "key"), [(b[0], b[2]) for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_naming_the_key_and_exit_2(bad_runs, name: str, key: str) -> None:  # type: ignore[no-untyped-def]
    p, d = bad_runs[name]
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert key in _one_line(p)
    assert not (d / "store").exists(), "the daemon touched the store with a bad config"


def test_good_config_checks(tmp_path: Path) -> None:
    cfg = tmp_path / "good.toml"
    cfg.write_text(_good(tmp_path))
    p = _run(["edge", "check", "--config", str(cfg)])
    assert p.returncode == 0, p.stderr


def test_not_toml_and_missing_file_exit_2(bad_runs) -> None:  # type: ignore[no-untyped-def]
    for name, what in (("not-toml", "not.toml"), ("missing-file", "missing.toml")):
        p, _ = bad_runs[name]
        assert p.returncode == 2, p.stderr
        assert what in _one_line(p)


QUICK = ["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:2", "--store", "S"]
QUICK_BAD = [
    ("no-upstream", QUICK, "upstream"),
    # the admin API may never share a client port (every listener binds with SO_REUSEPORT)
    (
        "admin-on-client-port",
        [*QUICK[:2], "--admin-listen", "127.0.0.1:1", *QUICK[4:], "--upstream", "http://x"],
        "admin.listen",
    ),
    ("workers-0", [*QUICK, "--upstream", "http://x", "--workers", "0"], "workers"),
    ("config-and-flags", ["--config", "C", "--listen", "127.0.0.1:1"], "--config"),
]


@pytest.mark.parametrize(("name", "key"), [(q[0], q[2]) for q in QUICK_BAD], ids=[q[0] for q in QUICK_BAD])
def test_bad_quick_flags_exit_2(bad_runs, name: str, key: str) -> None:  # type: ignore[no-untyped-def]
    p, _ = bad_runs[name]
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert key in _one_line(p)


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two daemons on one store would share the run directory (the second would reset the first's
    invalidation ring and counters) and race on the store: the second is refused, the first is
    untouched."""
    with edge(tmp_path / "first", ["http://127.0.0.1:1"]) as first:
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        rundir = run_dir(quick(listen, admin, first.store, ["http://127.0.0.1:1"]))
        before = sorted(p.name for p in rundir.iterdir())
        ring = (rundir / "shared").read_bytes()
        p = _run(["edge", "serve", "--listen", listen, "--admin-listen", admin, "--store", str(first.store),
                  "--upstream", "http://127.0.0.1:1"])  # fmt: skip
        assert p.returncode == 1, p.stderr
        line = _one_line(p)
        assert "in use by another cdnlab edge" in line and f"pid {first.proc.pid}" in line, line
        assert sorted(p.name for p in rundir.iterdir()) == before
        assert (rundir / "shared").read_bytes() == ring
        assert first.health()["state"] == "serving"
        with RawConn(first.port) as c:
            assert c.get("/x").status == 502  # still serving (its upstream is dead on purpose)
    assert not rundir.exists()  # the first, stopped, cleared its own


def test_a_failed_start_leaves_no_run_directory(tmp_path: Path) -> None:
    """A start that fails after the run directory was made (here: the client port is taken)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        admin = f"127.0.0.1:{free_port()}"
        store = tmp_path / "store"
        p = _run(["edge", "serve", "--listen", listen, "--admin-listen", admin, "--store", str(store),
                  "--upstream", "http://127.0.0.1:1"])  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "cannot listen on" in _one_line(p)
    assert not run_dir(quick(listen, admin, store, ["http://127.0.0.1:1"])).exists()


def test_store_that_is_a_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A --store path that cannot hold the store (here: a file) is named, without a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    args = ["--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{free_port()}"]
    p = _run(["edge", "serve", *args, "--store", str(blocker), "--upstream", "http://127.0.0.1:1"])
    assert p.returncode == 1, p.stderr
    line = _one_line(p)
    assert str(blocker) in line and "Not a directory" in line
    assert blocker.read_text() == "not a directory\n"
