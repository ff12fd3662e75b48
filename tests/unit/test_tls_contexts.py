"""TLS config validation and the SNI map (cdnlab.edge.tls), with certificates made by openssl."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from cdnlab.edge.config import ConfigError, from_mapping
from cdnlab.edge.tls import TLSContexts, cert_names

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(base: Path, name: str, *names: str) -> tuple[Path, Path]:
    cert, key = base / f"{name}.crt", base / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in (name, *names))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def config(tmp_path: Path, tls: dict) -> dict:
    return {
        "upstreams": ["http://127.0.0.1:9"],
        "state_dir": str(tmp_path / "state"),
        "tiers": [{"path": str(tmp_path / "f"), "kind": "flash", "capacity": "1G"}],
        "tls": tls,
    }


@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {
        "a": make_cert(tmp_path, "a.test"),
        "b": make_cert(tmp_path, "b.test", "*.b.test"),
    }


def test_sni_map_exact_wildcard_default(tmp_path: Path, pairs: dict[str, tuple[Path, Path]]) -> None:
    (ac, ak), (bc, bk) = pairs["a"], pairs["b"]
    cfg = from_mapping(
        config(
            tmp_path,
            {
                "listen": ["127.0.0.1:8443"],
                "certificates": [
                    {"cert": str(ac), "key": str(ak)},
                    {"cert": str(bc), "key": str(bk), "server_names": ["media.example", "*.b.test"]},
                ],
            },
        )
    )
    tls = TLSContexts(cfg.tls)
    a_ctx, b_ctx = tls.lookup("a.test"), tls.lookup("media.example")
    assert a_ctx is tls.default  # the first pair is the default without default = true
    assert b_ctx is not None and b_ctx is not a_ctx
    assert tls.lookup("x.b.test") is b_ctx and tls.lookup("X.B.TEST.") is b_ctx
    assert tls.lookup("b.test") is None  # server_names given: the certificate's own names are not added
    assert tls.lookup("deep.x.b.test") is None  # a wildcard covers one label, as in RFC 6125
    assert tls.lookup(None) is None and tls.lookup("other") is None
    assert a_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert all(c["aead"] for c in a_ctx.get_ciphers())
    assert cert_names(bc) == ["b.test", "*.b.test"]


def test_default_flag_and_reload_keeps_old_on_failure(
    tmp_path: Path, pairs: dict[str, tuple[Path, Path]]
) -> None:
    (ac, ak), (bc, bk) = pairs["a"], pairs["b"]
    cfg = from_mapping(
        config(
            tmp_path,
            {
                "listen": ["127.0.0.1:8443"],
                "certificates": [
                    {"cert": str(ac), "key": str(ak)},
                    {"cert": str(bc), "key": str(bk), "default": True},
                ],
            },
        )
    )
    tls = TLSContexts(cfg.tls)
    assert tls.default is tls.lookup("b.test")
    old = tls.default
    assert tls.reload() and tls.default is not old and tls.generation == 2
    bk.write_text("not a key\n")  # a broken key on disk: the reload fails, the old set serves on
    current = tls.default
    assert not tls.reload()
    assert tls.default is current and tls.generation == 2


@pytest.mark.parametrize(
    ("tls", "needle"),
    [
        ({"listen": ["127.0.0.1:8443"]}, "needs at least one"),
        ({"certificates": "PAIR"}, "need a tls.listen"),
        ({"listen": ["127.0.0.1:8443"], "certificates": "PAIR", "min_version": "1.1"}, "tls.min_version"),
        ({"listen": ["127.0.0.1:8443"], "certificates": "PAIR", "ciphers": "AES128-SHA"}, "tls.ciphers"),
        ({"listen": ["127.0.0.1:8443"], "certificates": "PAIR", "ciphers": "ECDHE+AES128"}, "AEAD"),
        ({"listen": ["127.0.0.1:8443"], "certificates": "PAIR", "ocsp": True}, "tls.ocsp: unknown key"),
        ({"listen": ["127.0.0.1:8080"], "certificates": "PAIR"}, "also a plain"),
        ({"listen": ["nope"], "certificates": "PAIR"}, "tls.listen: Value error, expected HOST:PORT"),
        (
            {"listen": ["127.0.0.1:8443"], "certificates": "MISSING"},
            "tls.certificates.0.cert: Value error, no such",
        ),
        (
            {"listen": ["127.0.0.1:8443"], "certificates": "MISMATCH"},
            "tls.certificates.0: Value error, cannot load",
        ),
    ],
)
def test_bad_tls_config_is_one_line(
    tmp_path: Path, pairs: dict[str, tuple[Path, Path]], tls: dict, needle: str
) -> None:
    (ac, ak), (_bc, bk) = pairs["a"], pairs["b"]
    certs = {
        "PAIR": [{"cert": str(ac), "key": str(ak)}],
        "MISSING": [{"cert": str(tmp_path / "gone.crt"), "key": str(ak)}],
        "MISMATCH": [{"cert": str(ac), "key": str(bk)}],
    }
    tls = dict(tls)
    if isinstance(tls.get("certificates"), str):
        tls["certificates"] = certs[tls["certificates"]]
    with pytest.raises(ConfigError) as err:
        from_mapping(config(tmp_path, tls))
    msg = str(err.value)
    assert "\n" not in msg and needle in msg, msg
