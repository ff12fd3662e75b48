"""Request-target normalisation: RFC 9112 §3.2 forms, RFC 3986 §5.2.4 / §6.2.2 normalisation,
and the hostile inputs of issue 2 point 10."""

from __future__ import annotations

import random

import pytest

from cdnlab.edge.target import MAX_TARGET_LENGTH, BadTarget, normalize_target


def path_of(raw: bytes) -> str:
    return normalize_target(raw)[0]


def bad(raw: bytes) -> BadTarget:
    with pytest.raises(BadTarget) as info:
        normalize_target(raw)
    return info.value


# --- RFC 9112 §3.2 request-target forms ---


def test_rfc9112_3_2_1_origin_form() -> None:
    assert normalize_target(b"/where?q=now") == ("/where", "q=now")
    assert normalize_target(b"/") == ("/", "")


def test_rfc9112_3_2_2_absolute_form() -> None:
    assert normalize_target(b"http://www.example.org/pub/WWW/TheProject.html") == (
        "/pub/WWW/TheProject.html",
        "",
    )
    assert normalize_target(b"https://www.example.org:8443/a?b=c") == ("/a", "b=c")
    assert normalize_target(b"HTTP://WWW.EXAMPLE.ORG/a") == ("/a", "")  # scheme is case-insensitive


def test_absolute_form_with_empty_path_is_root() -> None:
    # RFC 9112 §3.2.1: an empty path is sent as "/".
    assert normalize_target(b"http://www.example.org") == ("/", "")
    assert normalize_target(b"http://www.example.org?x=1") == ("/", "x=1")


def test_rfc9112_3_2_3_authority_form_is_refused() -> None:
    bad(b"www.example.com:80")
    bad(b"www.example.com:443")


def test_rfc9112_3_2_4_asterisk_form_is_refused() -> None:
    bad(b"*")


@pytest.mark.parametrize("raw", [b"", b"a/b", b"ftp://host/x", b"://host/x", b"mailto:x@y", b"?q"])
def test_other_forms_are_refused(raw: bytes) -> None:
    bad(raw)


def test_rfc9110_4_2_1_empty_host_is_rejected() -> None:
    # "A recipient that processes such a URI reference MUST reject it as invalid."
    bad(b"http:///etc/passwd")
    bad(b"http://?x")


def test_rfc9110_4_2_4_userinfo_is_an_error() -> None:
    bad(b"http://user:pass@example.com/x")
    bad(b"http://user@example.com")


def test_control_characters_in_authority() -> None:
    bad(b"http://exa\x00mple.com/x")
    bad(b"http://exa mple.com/x")


# --- RFC 3986 §6.2.2 syntax-based normalisation ---


def test_rfc3986_6_2_2_example() -> None:
    # "example://a/b/c/%7Bfoo%7D" and "eXAMPLE://a/./b/../b/%63/%7bfoo%7d" are equivalent.
    assert path_of(b"http://a/./b/../b/%63/%7bfoo%7d") == "/b/c/%7Bfoo%7D"
    assert path_of(b"/b/c/%7Bfoo%7D") == "/b/c/%7Bfoo%7D"


def test_rfc3986_6_2_2_1_hex_digits_upper_case() -> None:
    assert path_of(b"/a%3ab") == "/a%3Ab"
    assert path_of(b"/%c3%a9") == "/%C3%A9"


def test_rfc3986_6_2_2_2_unreserved_are_decoded() -> None:
    # ALPHA (%41-%5A and %61-%7A), DIGIT (%30-%39), hyphen (%2D), period (%2E), underscore
    # (%5F), or tilde (%7E) "should be decoded to their corresponding unreserved characters"
    assert path_of(b"/%41%5A%61%7A%30%39%2D%2E%5F%7E") == "/AZaz09-._~"
    assert path_of(b"/%7Esmith/home.html") == "/~smith/home.html"


def test_reserved_escapes_stay_encoded() -> None:
    # Reserved characters and their escapes are not equivalent (RFC 3986 §2.2).
    assert path_of(b"/a%3Bb") == "/a%3Bb"
    assert path_of(b"/a;b") == "/a;b"
    assert path_of(b"/%25") == "/%25"
    assert path_of(b"/%2541") == "/%2541"  # decoded once only


def test_rfc9110_4_2_3_equivalent_http_uris() -> None:
    # "http://example.com:80/~smith/home.html", "http://EXAMPLE.com/%7Esmith/home.html" and
    # "http://EXAMPLE.com:/%7esmith/home.html" are equivalent.
    paths = {
        path_of(b"http://example.com:80/~smith/home.html"),
        path_of(b"http://EXAMPLE.com/%7Esmith/home.html"),
        path_of(b"http://EXAMPLE.com:/%7esmith/home.html"),
        path_of(b"/~smith/home.html"),
    }
    assert paths == {"/~smith/home.html"}


# --- RFC 3986 §5.2.4 remove_dot_segments ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/a/b/c/./../../g", "/a/g"),  # the §5.2.4 example
        (b"/a/./b", "/a/b"),
        (b"/a/c/../b", "/a/b"),
        (b"/a/.", "/a/"),
        (b"/a/..", "/"),
        (b"/a/b/..", "/a/"),
        (b"/.", "/"),
        (b"/./", "/"),
        (b"/a/%2e/b", "/a/b"),  # encoded dots are dots (decoded before removal)
        (b"/a/%2E%2E/b", "/b"),
        (b"/a/.%2e/b", "/b"),
        (b"/a/%2e./b", "/b"),
        (b"/a/.../b", "/a/.../b"),  # not a dot segment
        (b"/a/..b/c", "/a/..b/c"),
        (b"/a/b../c", "/a/b../c"),
        (b"/.well-known/x", "/.well-known/x"),
        (b"/a.b/c", "/a.b/c"),
    ],
)
def test_rfc3986_5_2_4_dot_segments(raw: bytes, expected: str) -> None:
    assert path_of(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/../",
        b"/../etc/passwd",
        b"/a/../../etc/passwd",
        b"/a/b/../../../x",
        b"/%2e%2e/etc/passwd",
        b"/%2E%2E/%2E%2E/etc/passwd",
        b"/.%2e/x",
        b"/%2e./x",
        b"//..//x",
        b"/./../x",
        b"http://host/../x",
    ],
)
def test_climbing_above_root_is_refused(raw: bytes) -> None:
    # nginx answers 400 here; RFC 3986 would silently clamp at the root.
    assert bad(raw).status == 400


def test_duplicate_slashes_merge() -> None:
    assert path_of(b"//a///b") == "/a/b"
    assert path_of(b"//") == "/"
    assert path_of(b"//evil.example/x") == "/evil.example/x"  # never a network-path reference
    assert path_of(b"/a//") == "/a/"


def test_trailing_slash_is_significant() -> None:
    assert path_of(b"/a/") == "/a/"
    assert path_of(b"/a") == "/a"


# --- %2F and other separators ---


def test_encoded_slash_is_kept_and_is_not_a_separator() -> None:
    assert path_of(b"/a%2fb") == "/a%2Fb"
    assert path_of(b"/a%2Fb") == "/a%2Fb"
    assert path_of(b"/a%2Fb") != path_of(b"/a/b")
    # "..%2F" is one segment named "..%2F...", so it cannot climb.
    assert path_of(b"/..%2f..%2fetc%2fpasswd") == "/..%2F..%2Fetc%2Fpasswd"
    assert path_of(b"/a/%2e%2e%2fb") == "/a/..%2Fb"


def test_backslash_is_data() -> None:
    assert path_of(b"/..\\..\\windows") == "/..%5C..%5Cwindows"
    assert path_of(b"/a%5cb") == "/a%5Cb"


# --- NUL, control characters, bad escapes, bad UTF-8 ---


@pytest.mark.parametrize(
    "raw",
    [
        b"/a\x00b",
        b"/a%00b",
        b"/a%00.html",
        b"/x?a=\x00",
        b"/a\rb",
        b"/a\nb",
        b"/a\r\nHost: evil",
        b"/a%0d%0aSet-Cookie:x",
        b"/a%0Ab",
        b"/a\tb",
        b"/a%09b",
        b"/a\x7fb",
        b"/a%7Fb",
        b"/a%1fb",
        b"/x?a=\r\n",
    ],
)
def test_nul_and_control_characters_are_refused(raw: bytes) -> None:
    bad(raw)


def test_nul_reason_says_so() -> None:
    assert "NUL" in bad(b"/a%00").reason
    assert "NUL" in bad(b"/a\x00").reason


@pytest.mark.parametrize(
    "raw", [b"/%", b"/a%", b"/%2", b"/%G0", b"/%0G", b"/%%41", b"/% 41", b"/%+1", b"/%-1"]
)
def test_invalid_percent_encoding_is_refused(raw: bytes) -> None:
    bad(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"/%ff",
        b"/%c3",  # truncated sequence
        b"/%C0%AE%C0%AE/etc/passwd",  # overlong "." (the classic IIS traversal)
        b"/%C0%AF",  # overlong "/"
        b"/%ED%A0%80",  # UTF-16 surrogate
        b"/\xff",
        b"/\xc0\xae",
    ],
)
def test_invalid_utf8_is_refused(raw: bytes) -> None:
    bad(raw)


def test_utf8_raw_and_escaped_are_one_key() -> None:
    assert path_of("/vidéo/月".encode()) == path_of(b"/vid%c3%a9o/%E6%9C%88") == "/vid%C3%A9o/%E6%9C%88"


def test_unsafe_ascii_is_encoded_to_one_key() -> None:
    assert path_of(b"/a|b") == path_of(b"/a%7cb") == "/a%7Cb"
    assert path_of(b"/a b") == "/a%20b"
    assert path_of(b'/"<>^`{}') == "/%22%3C%3E%5E%60%7B%7D"


def test_fragment_is_refused() -> None:
    bad(b"/a#frag")
    bad(b"/a?b#frag")
    bad(b"http://host#frag")


# --- query ---


def test_query_is_returned_as_is() -> None:
    assert normalize_target(b"/x?a=1&b=%zz&c=%7e") == ("/x", "a=1&b=%zz&c=%7e")
    assert normalize_target(b"/x?") == ("/x", "")
    assert normalize_target(b"/x??a=/../") == ("/x", "?a=/../")
    assert normalize_target(b"/a/../b?c=../d") == ("/b", "c=../d")


def test_query_raw_bytes_outside_ascii_are_encoded() -> None:
    assert normalize_target("/x?q=é z".encode()) == ("/x", "q=%C3%A9%20z")


# --- length ---


def test_length_cap() -> None:
    ok = b"/" + b"a" * (MAX_TARGET_LENGTH - 1)
    assert path_of(ok) == ok.decode()
    err = bad(ok + b"a")
    assert err.status == 414
    assert isinstance(err, ValueError)
    with pytest.raises(BadTarget):
        normalize_target(b"/abc", max_length=3)


# --- properties ---


def _check_canonical(path: str, query: str) -> None:
    assert path.startswith("/")
    assert path.isascii() and query.isascii()
    assert "//" not in path
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert all(0x20 < ord(c) < 0x7F for c in path)
    assert "#" not in path and "#" not in query


def test_property_fuzz_never_escapes() -> None:
    rng = random.Random(3986)
    alphabet = [
        b"/",
        b".",
        b"..",
        b"%2e",
        b"%2E",
        b"%2f",
        b"%",
        b"a",
        b"b",
        b"%41",
        b"\\",
        b"%00",
        b"?",
        b"~",
    ]
    accepted = 0
    for _ in range(5000):
        raw = b"/" + b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        try:
            path, query = normalize_target(raw)
        except BadTarget:
            continue
        accepted += 1
        _check_canonical(path, query)
        # Idempotent: the canonical form is its own canonical form.
        assert normalize_target(path.encode() + (b"?" + query.encode() if query else b"")) == (path, query)
    assert accepted > 1000


def test_property_spellings_of_one_path_are_one_key() -> None:
    rng = random.Random(622)
    unreserved = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~"
    for _ in range(1000):
        segments = [
            bytes(rng.choice(unreserved) for _ in range(rng.randrange(1, 6)))
            for _ in range(rng.randrange(1, 5))
        ]
        plain = b"/" + b"/".join(segments)
        # Another spelling: random escapes of unreserved bytes (random hex case), extra slashes,
        # "." segments, and "x/.." detours.
        out = bytearray()
        for seg in segments:
            out += b"/" * rng.randrange(1, 3)
            if rng.random() < 0.3:
                out += b"./"
            if rng.random() < 0.3:
                out += b"zz/%2E%2e/"
            for c in seg:
                if rng.random() < 0.5:
                    esc = b"%%%02X" % c
                    out += esc.lower() if rng.random() < 0.5 else esc
                else:
                    out.append(c)
        assert path_of(bytes(out)) == path_of(plain) == plain.decode(), bytes(out)
