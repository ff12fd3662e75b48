"""CloudFront: access controls, policies, the signing function, the distribution, its metrics."""

from __future__ import annotations

from typing import Any

from infra.applier.base import ApplyError, Attrs, Context, aws_tags, caller_reference, creates, items
from infra.graph import CLOUDFRONT_ZONE_ID, Node


def _cf(ctx: Context) -> Any:
    return ctx.client("cloudfront", "us-east-1")


@creates(
    "aws:cloudfront/originAccessControl:OriginAccessControl",
    {"name", "description", "originAccessControlOriginType", "signingBehavior", "signingProtocol"},
)
def origin_access_control(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    oac = _cf(ctx).create_origin_access_control(
        OriginAccessControlConfig={
            "Name": i["name"],
            "Description": i.get("description", ""),
            "SigningProtocol": i["signingProtocol"],
            "SigningBehavior": i["signingBehavior"],
            "OriginAccessControlOriginType": i["originAccessControlOriginType"],
        }
    )
    return {"id": oac["OriginAccessControl"]["Id"], "etag": oac.get("ETag", "")}


def _names(block: dict[str, Any] | None, behavior_key: str, list_key: str, api_list: str) -> dict[str, Any]:
    block = block or {}
    out: dict[str, Any] = {behavior_key[0].upper() + behavior_key[1:]: block[behavior_key]}
    names = (block.get(list_key) or {}).get("items") or []
    if names:
        out[api_list] = items(names)
    return out


@creates(
    "aws:cloudfront/cachePolicy:CachePolicy",
    {"name", "comment", "minTtl", "defaultTtl", "maxTtl", "parametersInCacheKeyAndForwardedToOrigin"},
)
def cache_policy(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    p = i["parametersInCacheKeyAndForwardedToOrigin"]
    created = _cf(ctx).create_cache_policy(
        CachePolicyConfig={
            "Name": i["name"],
            "Comment": i.get("comment", ""),
            "MinTTL": i["minTtl"],
            "DefaultTTL": i["defaultTtl"],
            "MaxTTL": i["maxTtl"],
            "ParametersInCacheKeyAndForwardedToOrigin": {
                "EnableAcceptEncodingGzip": bool(p.get("enableAcceptEncodingGzip")),
                "EnableAcceptEncodingBrotli": bool(p.get("enableAcceptEncodingBrotli")),
                "HeadersConfig": _names(p["headersConfig"], "headerBehavior", "headers", "Headers"),
                "CookiesConfig": _names(p["cookiesConfig"], "cookieBehavior", "cookies", "Cookies"),
                "QueryStringsConfig": _names(
                    p["queryStringsConfig"], "queryStringBehavior", "queryStrings", "QueryStrings"
                ),
            },
        }
    )
    return {"id": created["CachePolicy"]["Id"], "etag": created.get("ETag", "")}


@creates(
    "aws:cloudfront/originRequestPolicy:OriginRequestPolicy",
    {"name", "comment", "cookiesConfig", "headersConfig", "queryStringsConfig"},
)
def origin_request_policy(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    created = _cf(ctx).create_origin_request_policy(
        OriginRequestPolicyConfig={
            "Name": i["name"],
            "Comment": i.get("comment", ""),
            "HeadersConfig": _names(i["headersConfig"], "headerBehavior", "headers", "Headers"),
            "CookiesConfig": _names(i["cookiesConfig"], "cookieBehavior", "cookies", "Cookies"),
            "QueryStringsConfig": _names(
                i["queryStringsConfig"], "queryStringBehavior", "queryStrings", "QueryStrings"
            ),
        }
    )
    return {"id": created["OriginRequestPolicy"]["Id"], "etag": created.get("ETag", "")}


def _security_headers(s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "strictTransportSecurity" in s:
        h = s["strictTransportSecurity"]
        out["StrictTransportSecurity"] = {
            "Override": bool(h.get("override")),
            "IncludeSubdomains": bool(h.get("includeSubdomains")),
            "Preload": bool(h.get("preload")),
            "AccessControlMaxAgeSec": h["accessControlMaxAgeSec"],
        }
    if "contentTypeOptions" in s:
        out["ContentTypeOptions"] = {"Override": bool(s["contentTypeOptions"].get("override"))}
    if "frameOptions" in s:
        h = s["frameOptions"]
        out["FrameOptions"] = {"Override": bool(h.get("override")), "FrameOption": h["frameOption"]}
    if "referrerPolicy" in s:
        h = s["referrerPolicy"]
        out["ReferrerPolicy"] = {"Override": bool(h.get("override")), "ReferrerPolicy": h["referrerPolicy"]}
    if "xssProtection" in s:
        h = s["xssProtection"]
        out["XSSProtection"] = {
            "Override": bool(h.get("override")),
            "Protection": bool(h.get("protection")),
            "ModeBlock": bool(h.get("modeBlock")),
        }
    unknown = set(s) - {
        "strictTransportSecurity",
        "contentTypeOptions",
        "frameOptions",
        "referrerPolicy",
        "xssProtection",
    }
    if unknown:
        raise ApplyError(f"response headers policy: security header {sorted(unknown)[0]!r} not supported")
    return out


def _cors(c: dict[str, Any]) -> dict[str, Any]:
    out = {
        "AccessControlAllowCredentials": bool(c.get("accessControlAllowCredentials")),
        "AccessControlAllowHeaders": items(c["accessControlAllowHeaders"]["items"]),
        "AccessControlAllowMethods": items(c["accessControlAllowMethods"]["items"]),
        "AccessControlAllowOrigins": items(c["accessControlAllowOrigins"]["items"]),
        "OriginOverride": bool(c.get("originOverride")),
    }
    if "accessControlExposeHeaders" in c:
        out["AccessControlExposeHeaders"] = items(c["accessControlExposeHeaders"]["items"])
    if "accessControlMaxAgeSec" in c:
        out["AccessControlMaxAgeSec"] = c["accessControlMaxAgeSec"]
    return out


@creates(
    "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy",
    {"name", "comment", "securityHeadersConfig", "corsConfig"},
)
def response_headers_policy(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    config: dict[str, Any] = {"Name": i["name"], "Comment": i.get("comment", "")}
    if "securityHeadersConfig" in i:
        config["SecurityHeadersConfig"] = _security_headers(i["securityHeadersConfig"])
    if "corsConfig" in i:
        config["CorsConfig"] = _cors(i["corsConfig"])
    created = _cf(ctx).create_response_headers_policy(ResponseHeadersPolicyConfig=config)
    return {"id": created["ResponseHeadersPolicy"]["Id"], "etag": created.get("ETag", "")}


@creates("aws:cloudfront/function:Function", {"name", "runtime", "comment", "code", "publish"})
def function(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    cf = _cf(ctx)
    created = cf.create_function(
        Name=i["name"],
        FunctionConfig={"Comment": i.get("comment", ""), "Runtime": i["runtime"]},
        FunctionCode=i["code"].encode(),
    )
    etag = created["ETag"]
    if i.get("publish"):
        etag = cf.publish_function(Name=i["name"], IfMatch=etag).get("ETag", etag) or etag
    return {
        "id": i["name"],
        "arn": created["FunctionSummary"]["FunctionMetadata"]["FunctionARN"],
        "etag": etag,
    }


def _behaviour(b: dict[str, Any], node: Node) -> dict[str, Any]:
    known = {
        "pathPattern",
        "targetOriginId",
        "viewerProtocolPolicy",
        "allowedMethods",
        "cachedMethods",
        "compress",
        "cachePolicyId",
        "originRequestPolicyId",
        "responseHeadersPolicyId",
        "functionAssociations",
    }
    if set(b) - known:
        raise ApplyError(
            f"{node.type} {node.name}: cache behaviour field {sorted(set(b) - known)[0]!r} not supported"
        )
    out: dict[str, Any] = {
        "TargetOriginId": b["targetOriginId"],
        "ViewerProtocolPolicy": b["viewerProtocolPolicy"],
        "AllowedMethods": {**items(b["allowedMethods"]), "CachedMethods": items(b["cachedMethods"])},
        "Compress": bool(b.get("compress")),
        "CachePolicyId": b["cachePolicyId"],
        "SmoothStreaming": False,
        "FieldLevelEncryptionId": "",
        "LambdaFunctionAssociations": {"Quantity": 0},
        "FunctionAssociations": items(
            [
                {"FunctionARN": f["functionArn"], "EventType": f["eventType"]}
                for f in b.get("functionAssociations", [])
            ]
        ),
    }
    if "pathPattern" in b:
        out["PathPattern"] = b["pathPattern"]
    for key, api in (
        ("originRequestPolicyId", "OriginRequestPolicyId"),
        ("responseHeadersPolicyId", "ResponseHeadersPolicyId"),
    ):
        if b.get(key):
            out[api] = b[key]
    return out


def _origin(o: dict[str, Any], node: Node) -> dict[str, Any]:
    known = {"originId", "domainName", "originAccessControlId", "originShield", "connectionAttempts"}
    known |= {"connectionTimeout"}
    if set(o) - known:
        raise ApplyError(f"{node.type} {node.name}: origin field {sorted(set(o) - known)[0]!r} not supported")
    shield = o.get("originShield") or {"enabled": False}
    out: dict[str, Any] = {
        "Id": o["originId"],
        "DomainName": o["domainName"],
        "OriginPath": "",
        "CustomHeaders": {"Quantity": 0},
        # OAC, not an origin access identity: the identity stays empty.
        "S3OriginConfig": {"OriginAccessIdentity": ""},
        "OriginAccessControlId": o.get("originAccessControlId", ""),
        "OriginShield": {"Enabled": bool(shield.get("enabled"))},
        "ConnectionAttempts": o.get("connectionAttempts", 3),
        "ConnectionTimeout": o.get("connectionTimeout", 10),
    }
    if shield.get("enabled"):
        out["OriginShield"]["OriginShieldRegion"] = shield["originShieldRegion"]
    return out


def distribution_config(node: Node, i: dict[str, Any]) -> dict[str, Any]:
    """The CloudFront API's DistributionConfig for the program's Distribution inputs."""
    log = i.get("loggingConfig")
    cert = i["viewerCertificate"]
    geo = i.get("restrictions", {}).get("geoRestriction", {"restrictionType": "none"})
    return {
        "CallerReference": caller_reference(node),
        "Aliases": items(i.get("aliases")),
        "DefaultRootObject": "",
        "Origins": items([_origin(o, node) for o in i["origins"]]),
        "OriginGroups": items(
            [
                {
                    "Id": g["originId"],
                    "FailoverCriteria": {"StatusCodes": items(g["failoverCriteria"]["statusCodes"])},
                    "Members": items([{"OriginId": m["originId"]} for m in g["members"]]),
                }
                for g in i.get("originGroups", [])
            ]
        ),
        "DefaultCacheBehavior": _behaviour(i["defaultCacheBehavior"], node),
        "CacheBehaviors": items([_behaviour(b, node) for b in i.get("orderedCacheBehaviors", [])]),
        "CustomErrorResponses": {"Quantity": 0},
        "Comment": i.get("comment", ""),
        "Logging": {
            "Enabled": bool(log),
            "IncludeCookies": bool((log or {}).get("includeCookies")),
            "Bucket": (log or {}).get("bucket", ""),
            "Prefix": (log or {}).get("prefix", ""),
        },
        "PriceClass": i.get("priceClass", "PriceClass_All"),
        "Enabled": bool(i.get("enabled", True)),
        "ViewerCertificate": {
            "ACMCertificateArn": cert["acmCertificateArn"],
            "SSLSupportMethod": cert["sslSupportMethod"],
            "MinimumProtocolVersion": cert["minimumProtocolVersion"],
        },
        "Restrictions": {
            "GeoRestriction": {"RestrictionType": geo["restrictionType"], **items(geo.get("locations"))}
        },
        "WebACLId": i.get("webAclId", ""),
        "HttpVersion": i.get("httpVersion", "http2"),
        "IsIPV6Enabled": bool(i.get("isIpv6Enabled")),
    }


@creates(
    "aws:cloudfront/distribution:Distribution",
    {
        "aliases",
        "comment",
        "defaultCacheBehavior",
        "enabled",
        "httpVersion",
        "isIpv6Enabled",
        "loggingConfig",
        "orderedCacheBehaviors",
        "originGroups",
        "origins",
        "priceClass",
        "restrictions",
        "tags",
        "viewerCertificate",
        "webAclId",
    },
)
def distribution(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    cf = _cf(ctx)
    created = cf.create_distribution(DistributionConfig=distribution_config(node, i))["Distribution"]
    if i.get("tags"):
        cf.tag_resource(Resource=created["ARN"], Tags={"Items": aws_tags(i["tags"])})
    return {
        "id": created["Id"],
        "arn": created["ARN"],
        "domainName": created["DomainName"],
        "hostedZoneId": CLOUDFRONT_ZONE_ID,
        "etag": "",
    }


@creates(
    "aws:cloudfront/monitoringSubscription:MonitoringSubscription",
    {"distributionId", "monitoringSubscription"},
)
def monitoring_subscription(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    status = i["monitoringSubscription"]["realtimeMetricsSubscriptionConfig"][
        "realtimeMetricsSubscriptionStatus"
    ]
    _cf(ctx).create_monitoring_subscription(
        DistributionId=i["distributionId"],
        MonitoringSubscription={
            "RealtimeMetricsSubscriptionConfig": {"RealtimeMetricsSubscriptionStatus": status}
        },
    )
    return {"id": i["distributionId"]}
