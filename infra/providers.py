"""Explicit AWS providers for the regions a CDN needs besides the stack's own.

CloudFront only takes ACM certificates, WAF web ACLs and its CloudWatch metrics from us-east-1, and
the replica bucket lives in a second region. An explicit provider does not read the stack's ``aws:``
configuration, so the settings that point a stack at an emulator (endpoints, skipped checks, static
credentials) are copied over here; without this a lab stack would send these resources to real AWS.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

_BOOL_KEYS = {
    "skipCredentialsValidation": "skip_credentials_validation",
    "skipMetadataApiCheck": "skip_metadata_api_check",
    "skipRegionValidation": "skip_region_validation",
    "skipRequestingAccountId": "skip_requesting_account_id",
    "s3UsePathStyle": "s3_use_path_style",
}
_STR_KEYS = {"accessKey": "access_key", "secretKey": "secret_key", "profile": "profile"}


def inherited_settings(config: pulumi.Config | None = None) -> dict[str, Any]:
    """The default provider's ``aws:`` settings that an explicit provider must repeat."""
    config = config or pulumi.Config("aws")
    out: dict[str, Any] = {}
    for key, arg in _BOOL_KEYS.items():
        value = config.get_bool(key)
        if value is not None:
            out[arg] = value
    for key, arg in _STR_KEYS.items():
        value = config.get(key)
        if value is not None:
            out[arg] = value
    endpoints = config.get("endpoints")
    if endpoints:
        out["endpoints"] = json.loads(endpoints)
    return out


def regional(name: str, region: str, parent: pulumi.Resource | None = None) -> aws.Provider:
    return aws.Provider(
        name,
        region=region,
        **inherited_settings(),
        opts=pulumi.ResourceOptions(parent=parent),
    )
