"""CloudFront cache and origin-request policies generated from the policy catalog.

One cache policy per TTL class: its TTLs, its query-string cache key (the catalog's keyed
parameters, so signature parameters never split the cache), compression, and no headers in the
key: CloudFront forwards Range on a miss by itself and keeps one object for every range.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from cdnlab.policy import Catalog, TtlClass

# GET and HEAD only: the origin is S3 and the origin group fails over for these methods alone.
METHODS = ["GET", "HEAD"]


def cache_policy_args(c: TtlClass, catalog: Catalog, prefix: str) -> dict:
    """The CachePolicy arguments for one class (a pure function, easy to test and to diff)."""
    keyed = c.cacheable and c.query_key
    return {
        "name": f"{prefix}-{c.name}",
        "comment": c.description[:128],
        "min_ttl": c.min_ttl,
        "default_ttl": c.default_ttl,
        "max_ttl": c.max_ttl,
        "parameters_in_cache_key_and_forwarded_to_origin": {
            "cookies_config": {"cookie_behavior": "none"},
            "headers_config": {"header_behavior": "none"},
            "query_strings_config": (
                {
                    "query_string_behavior": "whitelist",
                    "query_strings": {"items": list(catalog.cache_key.query_params)},
                }
                if keyed
                else {"query_string_behavior": "none"}
            ),
            # CloudFront refuses encodings in the key of a policy that caches nothing.
            # Only the codings the class offers, so a gzip-only class stays gzip-only.
            "enable_accept_encoding_gzip": c.cacheable and "gzip" in c.codings,
            "enable_accept_encoding_brotli": c.cacheable and "br" in c.codings,
        },
    }


def origin_request_policy_args(catalog: Catalog, prefix: str) -> dict:
    headers = catalog.origin_request.headers
    return {
        "name": f"{prefix}-s3-origin",
        "comment": "Headers S3 needs beyond the cache key (CORS preflight)",
        "cookies_config": {"cookie_behavior": "none"},
        "headers_config": (
            {"header_behavior": "whitelist", "headers": {"items": list(headers)}}
            if headers
            else {"header_behavior": "none"}
        ),
        "query_strings_config": {"query_string_behavior": "none"},
    }


@dataclass(frozen=True)
class BehaviourPolicies:
    cache_policy_ids: dict[str, pulumi.Output[str]]
    origin_request_policy_id: pulumi.Output[str]


class CachePolicies(pulumi.ComponentResource):
    def __init__(
        self, name: str, *, catalog: Catalog, prefix: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("cdnlab:infra:CachePolicies", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cache_policies = {
            c.name: aws.cloudfront.CachePolicy(
                f"{name}-{c.name}", **cache_policy_args(c, catalog, prefix), opts=child
            )
            for c in catalog.classes
        }
        self.origin_request_policy = aws.cloudfront.OriginRequestPolicy(
            f"{name}-s3-origin", **origin_request_policy_args(catalog, prefix), opts=child
        )
        self.register_outputs({})

    def ids(self) -> BehaviourPolicies:
        return BehaviourPolicies(
            cache_policy_ids={k: v.id for k, v in self.cache_policies.items()},
            origin_request_policy_id=self.origin_request_policy.id,
        )


def behaviour_args(
    c: TtlClass,
    *,
    target_origin_id: str,
    policies: BehaviourPolicies,
    response_headers_policy_id: pulumi.Input[str],
    signing_function_arn: pulumi.Input[str] | None,
    path_pattern: str | None = None,
) -> dict:
    """One cache behaviour for class C (``path_pattern`` None: the default behaviour)."""
    args: dict = {
        "target_origin_id": target_origin_id,
        "viewer_protocol_policy": "https-only",
        "allowed_methods": METHODS,
        "cached_methods": METHODS,
        "compress": c.compress,
        "cache_policy_id": policies.cache_policy_ids[c.name],
        "origin_request_policy_id": policies.origin_request_policy_id,
        "response_headers_policy_id": response_headers_policy_id,
        "function_associations": (
            [{"event_type": "viewer-request", "function_arn": signing_function_arn}]
            if c.signed and signing_function_arn is not None
            else []
        ),
    }
    if path_pattern is not None:
        args["path_pattern"] = path_pattern
    return args
