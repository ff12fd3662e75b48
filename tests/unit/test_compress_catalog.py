"""The policy catalog's compression fields: compress (flag or codings), minify_json, image."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cdnlab.policy import CATALOG_ENV, CatalogError, default_catalog, from_mapping, load
from cdnlab.policy.catalog import DEFAULT_PATH


def _data() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_PATH.read_text())


def _with(name: str, **fields: Any) -> dict[str, Any]:
    data = _data()
    cls = next(c for c in data["class"] if c["name"] == name)
    cls.update(fields)
    return data


def test_packaged_catalog() -> None:
    cat = load()
    assert cat.by_name("manifest").codings == ("br", "gzip")
    assert cat.by_name("segment").codings == () and not cat.by_name("segment").compress
    assert cat.by_name("api").minify_json
    assert all(c.image is None for c in cat.classes)  # image optimisation is opt-in
    assert cat.by_name("default").compress  # HTML and other text under the catch-all


@pytest.mark.parametrize(
    ("value", "compress", "codings"),
    [
        (["gzip"], True, ("gzip",)),
        (["gzip", "br"], True, ("gzip", "br")),
        ([], False, ()),
        (True, True, ("br", "gzip")),
        (False, False, ()),
    ],
)
def test_compress_forms(value: Any, compress: bool, codings: tuple[str, ...]) -> None:
    c = from_mapping(_with("static", compress=value)).by_name("static")
    assert c.compress is compress and c.codings == codings


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compress": ["zstd"]}, "class[5].compress: unknown coding 'zstd'"),
        ({"compress": ["br", "br"]}, "class[5].compress: a coding is listed twice"),
        ({"compress": "yes"}, "class[5].compress: must be true, false or a list"),
        ({"codings": ["br"]}, "class[5].codings: unknown key"),
        ({"minify_json": "sometimes"}, "class[5].minify_json"),
        ({"image": {"max_width": 0}}, "class[5].image.max_width"),
        ({"image": {"max_width": 100, "quality": 101}}, "class[5].image.quality"),
        ({"image": {"max_width": 100, "format": "gif"}}, "class[5].image.format"),
        ({"image": {"max_width": 100, "colour": "red"}}, "class[5].image.colour: unknown key"),
        ({"image": {}}, "class[5].image.max_width: required key is missing"),
    ],
)
def test_bad_fields_are_one_clear_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError) as exc:
        from_mapping(_with("static", **fields))
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)


def test_rewrites_need_a_stored_class() -> None:
    with pytest.raises(CatalogError, match=r"class\[6\].minify_json: a class that is never stored"):
        from_mapping(_with("dynamic", minify_json=True))
    with pytest.raises(CatalogError, match=r"class\[6\].image: a class that is never stored"):
        from_mapping(_with("dynamic", image={"max_width": 10}))


def test_image_opt_parsed() -> None:
    c = from_mapping(_with("image", image={"max_width": 640, "quality": 70, "format": "webp"})).by_name(
        "image"
    )
    assert c.image is not None and (c.image.max_width, c.image.quality, c.image.format) == (640, 70, "webp")


def test_catalog_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DEFAULT_PATH.read_text().replace(
        'patterns = ["/images/*"]\n', 'patterns = ["/images/*"]\nimage = { max_width = 99 }\n'
    )
    f = tmp_path / "catalog.toml"
    f.write_text(text)
    monkeypatch.setenv(CATALOG_ENV, str(f))
    default_catalog.cache_clear()
    try:
        img = default_catalog().by_name("image").image
        assert img is not None and img.max_width == 99
    finally:
        monkeypatch.delenv(CATALOG_ENV)
        default_catalog.cache_clear()
    assert default_catalog().by_name("image").image is None


def test_cli_check_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from cdnlab.policy.cli import register

    def main(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="cdnlab")
        register(parser.add_subparsers().add_parser("policy"))
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)

    assert main(["policy", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok: 8 classes")
    assert main(["policy", "show", "/api/v1/titles", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["class"] == "api" and shown["compress"] == ["br", "gzip"] and shown["minify_json"] is True
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_PATH.read_text().replace('compress = ["br", "gzip"]', 'compress = ["lzma"]', 1))
    assert main(["policy", "check", "--catalog", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "cdnlab policy: class[0].compress: unknown coding 'lzma' (known: br, gzip)"


def test_model_round_trip() -> None:
    from cdnlab.policy.catalog import Catalog

    cat = load()
    assert Catalog.model_validate(cat.model_dump(by_alias=True)) == cat


def test_edge_check_refuses_a_bad_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cdnlab.edge.cli import register

    bad = tmp_path / "catalog.toml"
    bad.write_text(DEFAULT_PATH.read_text().replace("minify_json = true", "minify_json = 3", 1))
    parser = argparse.ArgumentParser(prog="cdnlab edge")
    register(parser)
    quick = ["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:2", "--store", str(tmp_path / "s")]
    args = parser.parse_args(["check", *quick, "--upstream", "http://127.0.0.1:3"])
    monkeypatch.setenv(CATALOG_ENV, str(bad))
    default_catalog.cache_clear()
    try:
        assert args.func(args) == 2
    finally:
        monkeypatch.delenv(CATALOG_ENV)
        default_catalog.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err.startswith("cdnlab edge: config error: policy catalog: class[3].minify_json"), err
    assert args.func(args) == 0
