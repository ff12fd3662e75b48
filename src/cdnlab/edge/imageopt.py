"""Image optimisation when an image is stored (opt-in per catalog class): scale down to a maximum
width and re-encode (JPEG quality, WebP), with Pillow.

Pure function over bytes. An image Pillow cannot fully decode raises ``ImageError``: the caller
keeps the stored bytes as they are (a corrupt image is never dropped, never turned into a 500).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from cdnlab.policy import ImageOpt

# Formats we re-encode; animated GIFs and the rest are kept as they are.
_HANDLED = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Refuse decompression bombs outright (Pillow's own check only warns below twice this).
MAX_PIXELS = 50_000_000


class ImageError(Exception):
    """The bytes are not an image we can decode."""


def handles(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in _HANDLED


def optimise(data: bytes, opt: ImageOpt) -> tuple[bytes, str] | None:
    """``(new bytes, Content-Type)``, or None when nothing would improve (kept as stored).

    Wider than ``opt.max_width``: scaled down (aspect kept, EXIF orientation applied first).
    Re-encoded in ``opt.format`` (``keep``: the image's own) at ``opt.quality`` for JPEG and WebP.
    The result is kept only if it was scaled, changes format, or is smaller.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as src:
                fmt = src.format or ""
                if fmt not in _TYPES:
                    return None
                if getattr(src, "is_animated", False):
                    return None  # frames would be lost
                if src.width * src.height > MAX_PIXELS:
                    raise ImageError(f"{src.width}x{src.height} is more pixels than we decode")
                src.load()  # a truncated or corrupt body fails here, not half-way through encoding
                img = ImageOps.exif_transpose(src)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, bomb errors...
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    target = fmt if opt.format == "keep" else opt.format.upper()
    scaled = img.width > opt.max_width
    if scaled:
        height = max(1, round(img.height * opt.max_width / img.width))
        img = img.resize((opt.max_width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if target == "JPEG":
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")  # JPEG has no alpha
        img.save(out, "JPEG", quality=opt.quality, optimize=True, progressive=True)
    elif target == "WEBP":
        img.save(out, "WEBP", quality=opt.quality, method=4)
    else:
        img.save(out, "PNG", optimize=True)
    result = out.getvalue()
    if not scaled and target == fmt and len(result) >= len(data):
        return None
    return result, _TYPES[target]
