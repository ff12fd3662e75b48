"""The viewer-request CloudFront Function that checks signed URLs (source: ``viewer_request.js``).

Keys are embedded from stack config rather than read from a CloudFront KeyValueStore: the check
then needs no extra service, works the same on every emulator, and a key rotation is a config
change plus ``pulumi up``. The code is a Pulumi secret so the keys stay encrypted in state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws

SOURCE = Path(__file__).with_name("viewer_request.js")
PLACEHOLDER = "__SIGNING_KEYS__"
RUNTIME = "cloudfront-js-2.0"
# CloudFront Functions code may be at most 10 KB.
MAX_CODE_BYTES = 10_240


def render(keys: dict[str, str]) -> str:
    """The function source with KEYS filled in (a JSON object literal is a valid JS one)."""
    template = SOURCE.read_text()
    if template.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{SOURCE.name}: expected exactly one {PLACEHOLDER}")
    code = template.replace(PLACEHOLDER, json.dumps(keys, sort_keys=True))
    if len(code.encode()) > MAX_CODE_BYTES:
        raise ValueError(
            f"signing function is {len(code.encode())} bytes; CloudFront allows {MAX_CODE_BYTES}"
        )
    return code


def signing_function(
    name: str, prefix: str, keys: pulumi.Output[dict[str, str]], opts: pulumi.ResourceOptions | None = None
) -> aws.cloudfront.Function:
    return aws.cloudfront.Function(
        name,
        name=f"{prefix}-verify-signed-url",
        runtime=RUNTIME,
        comment="Rejects requests without a valid cdnlab signed URL (exp, kid, sig)",
        code=pulumi.Output.secret(keys.apply(render)),
        publish=True,
        opts=opts,
    )
