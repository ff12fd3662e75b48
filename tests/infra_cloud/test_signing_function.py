"""The CloudFront viewer-request function, run for real under node, against cdnlab.signing.

URLs are signed by the Python signer the control plane uses; the JavaScript must accept and
reject exactly what ``cdnlab.signing.verify`` does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from cdnlab.signing import Verdict, sign_path, verify
from infra.viewer_request import render

NODE = shutil.which("node")
HARNESS = Path(__file__).with_name("cf_function_harness.js")
KEYS = {"k1": "k1-secret-0123456789abcdef", "k2": "k2-secret-fedcba9876543210"}

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (Debian package nodejs)")


def event(url: str) -> dict:
    """A viewer-request event as CloudFront builds it: the raw path and raw query values."""
    path, _, query = url.partition("?")
    qs: dict[str, dict] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name in qs:
            first = qs[name]
            first.setdefault("multiValue", [{"value": first["value"]}]).append({"value": value})
        else:
            qs[name] = {"value": value}
    return {
        "version": "1.0",
        "context": {"eventType": "viewer-request"},
        "request": {"method": "GET", "uri": path, "querystring": qs, "headers": {}},
    }


def run(urls: list[str], keys: dict[str, str] = KEYS) -> list[dict]:
    payload = json.dumps({"code": render(keys), "events": [event(u) for u in urls]})
    out = subprocess.run(
        [NODE, str(HARNESS)], input=payload, capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(out.stdout)


def python_verdict(url: str, keys: dict[str, str] = KEYS) -> Verdict:
    from urllib.parse import parse_qsl

    path, _, query = url.partition("?")
    return verify(path, dict(parse_qsl(query, keep_blank_values=True)), keys)


def test_valid_expired_forged_missing() -> None:
    now = int(time.time())
    seg = "/title/42/video/1080p/seg%20001.m4s"  # the raw, still percent-encoded path is signed
    valid = sign_path(seg, "k1", KEYS["k1"], now + 600, query="profile=hd&language=fr")
    valid_k2 = sign_path("/title/42/manifest.mpd", "k2", KEYS["k2"], now + 60)
    expired = sign_path(seg, "k1", KEYS["k1"], now - 5)
    forged_key = sign_path(seg, "k1", "not-the-key-at-all-000000", now + 600)
    other_path = valid.replace("seg%20001", "seg%20002")
    longer_exp = valid.replace(f"exp={now + 600}", f"exp={now + 6000}")
    unknown_kid = sign_path(seg, "k9", "whatever-key-0123456789", now + 600)
    missing = seg + "?profile=hd"
    no_sig = valid.rsplit("&sig=", 1)[0]
    malformed = valid.rsplit("&sig=", 1)[0] + "&sig=abc"
    upper = valid.rsplit("&sig=", 1)[0] + "&sig=" + valid.rsplit("&sig=", 1)[1].upper()
    urls = [
        valid,
        valid_k2,
        upper,
        expired,
        forged_key,
        other_path,
        longer_exp,
        unknown_kid,
        missing,
        no_sig,
        malformed,
    ]
    results = run(urls)

    expected = {
        valid: Verdict.OK,
        valid_k2: Verdict.OK,
        upper: Verdict.OK,
        expired: Verdict.EXPIRED,
        forged_key: Verdict.BAD_SIGNATURE,
        other_path: Verdict.BAD_SIGNATURE,
        longer_exp: Verdict.BAD_SIGNATURE,
        unknown_kid: Verdict.UNKNOWN_KEY,
        missing: Verdict.MISSING,
        no_sig: Verdict.MISSING,
        malformed: Verdict.MALFORMED,
    }
    for url, result in zip(urls, results, strict=True):
        want = expected[url]
        assert python_verdict(url) is want, url  # the edge's own checker agrees with the table
        if want is Verdict.OK:
            assert "statusCode" not in result, (url, result)
            assert result["uri"] == url.partition("?")[0]
            # Signature parameters are stripped; the cache-key parameters stay.
            assert not {"exp", "kid", "sig"} & set(result["querystring"])
        else:
            assert result["statusCode"] == 403, (url, result)
            assert result["headers"]["x-cdnlab-denied"]["value"] == want.value
            assert result["headers"]["cache-control"]["value"] == "no-store"
    assert set(results[0]["querystring"]) == {"profile", "language"}


def test_key_ids_are_decoded_like_the_python_parser() -> None:
    keys = {"lab-1_a": "lab-key-0123456789abcdef"}
    url = sign_path("/a.m4s", "lab-1_a", keys["lab-1_a"], int(time.time()) + 60)
    assert run([url], keys)[0].get("statusCode") is None
    # A key id that only matches after percent-decoding is still found (Python decodes too).
    encoded = url.replace("kid=lab-1_a", "kid=" + quote("lab-1_a", safe="").replace("-", "%2D"))
    assert python_verdict(encoded, keys) is Verdict.OK
    assert run([encoded], keys)[0].get("statusCode") is None


def test_render_embeds_keys_once_and_stays_under_the_size_limit() -> None:
    code = render(KEYS)
    assert "__SIGNING_KEYS__" not in code and json.dumps(KEYS, sort_keys=True) in code
    with pytest.raises(ValueError, match="bytes; CloudFront allows"):
        render({f"k{i}": "x" * 64 for i in range(200)})
