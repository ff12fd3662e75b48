"""cdnlab's CrossGuard rules, as stack validations (most rules relate several resources).

Each rule is a plain function ``rule(args, report_violation)`` so it can be called directly (the
tests do, and ``infra.apply`` checks a captured graph with them before creating anything);
``POLICIES`` wraps them for ``PolicyPack`` in ``__main__.py``. Resources are matched by the values
the program wires between them (bucket names, ids, ARNs), which are the same in a real run and
under the mocks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from cdnlab.policy import default_catalog

BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
DISTRIBUTION = "aws:cloudfront/distribution:Distribution"
OAC = "aws:cloudfront/originAccessControl:OriginAccessControl"
OAI = "aws:cloudfront/originAccessIdentity:OriginAccessIdentity"
CACHE_POLICY = "aws:cloudfront/cachePolicy:CachePolicy"
WEB_ACL = "aws:wafv2/webAcl:WebAcl"
RECORD = "aws:route53/record:Record"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"

MODERN_TLS = frozenset({"TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025"})
SECURE_VIEWER_POLICIES = frozenset({"https-only", "redirect-to-https"})
PUBLIC_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
GEO_TTL_MAX = 60
# metric -> (comparison, the threshold the seed asks for, whether a larger threshold is laxer)
REQUIRED_ALARMS: dict[str, tuple[str, float, bool]] = {
    "5xxErrorRate": ("GreaterThanThreshold", 0.1, True),
    "4xxErrorRate": ("GreaterThanThreshold", 1.0, True),
    "CacheHitRate": ("LessThanThreshold", 80.0, False),
    "OriginLatency": ("GreaterThanThreshold", 500.0, True),
}

Rule = Callable[[StackValidationArgs, ReportViolation], None]


def _of(args: StackValidationArgs, type_: str) -> list[Any]:
    return [r for r in args.resources if r.resource_type == type_]


def _p(resource: Any, key: str, default: Any = None) -> Any:
    value = resource.props.get(key, default)
    return default if value is None else value


def _bucket_names(bucket: Any) -> set[str]:
    return {str(v) for v in (_p(bucket, "bucket"), _p(bucket, "id")) if v}


def _targets(resources: Iterable[Any], bucket: Any) -> list[Any]:
    names = _bucket_names(bucket)
    return [r for r in resources if str(_p(r, "bucket", "")) in names]


def _behaviours(dist: Any) -> list[Mapping[str, Any]]:
    default = _p(dist, "defaultCacheBehavior", {})
    return [default, *_p(dist, "orderedCacheBehaviors", [])]


def _anyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        aws = principal.get("AWS")
        return aws == "*" or (isinstance(aws, list) and "*" in aws)
    return False


def no_public_bucket(args: StackValidationArgs, report: ReportViolation) -> None:
    blocks = _of(args, PUBLIC_ACCESS_BLOCK)
    for bucket in _of(args, BUCKET):
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        if not any(all(_p(b, f) is True for f in flags) for b in _targets(blocks, bucket)):
            report(f"bucket {bucket.name} has no public access block with all four settings on", bucket.urn)
        if _p(bucket, "acl") in PUBLIC_ACLS:
            report(f"bucket {bucket.name} has a public canned ACL", bucket.urn)
    for acl in _of(args, BUCKET_ACL):
        if _p(acl, "acl") in PUBLIC_ACLS:
            report(f"{acl.name} grants a public canned ACL", acl.urn)
    for policy in _of(args, BUCKET_POLICY):
        doc = _p(policy, "policy", "{}")
        statements = (json.loads(doc) if isinstance(doc, str) else doc).get("Statement", [])
        for st in statements if isinstance(statements, list) else [statements]:
            anyone = _anyone(st.get("Principal"))
            if st.get("Effect") == "Allow" and anyone and not st.get("Condition"):
                report(f"{policy.name} allows anyone ({st.get('Sid', 'a statement')})", policy.urn)


def _is_s3_domain(domain: str) -> bool:
    return ".s3." in domain and domain.endswith(".amazonaws.com") and "s3-website" not in domain


def oac_only(args: StackValidationArgs, report: ReportViolation) -> None:
    for oai in _of(args, OAI):
        report(
            f"{oai.name}: legacy origin access identities are not allowed; use Origin Access Control", oai.urn
        )
    oacs = {str(_p(o, "id")): o for o in _of(args, OAC)}
    for dist in _of(args, DISTRIBUTION):
        for origin in _p(dist, "origins", []):
            oid = origin.get("originId")
            domain = str(origin.get("domainName", ""))
            if "s3-website" in domain:
                report(f"origin {oid} uses the public S3 website endpoint", dist.urn)
                continue
            if not _is_s3_domain(domain):
                continue
            if (origin.get("s3OriginConfig") or {}).get("originAccessIdentity"):
                report(f"origin {oid} uses an origin access identity instead of OAC", dist.urn)
            oac_id = origin.get("originAccessControlId")
            if not oac_id:
                report(f"S3 origin {oid} has no Origin Access Control", dist.urn)
                continue
            oac = oacs.get(str(oac_id))
            if oac is not None and (
                _p(oac, "signingBehavior") != "always" or _p(oac, "signingProtocol") != "sigv4"
            ):
                report(f"OAC {oac.name} for origin {oid} must sign always with sigv4", oac.urn)


def tls_modern(args: StackValidationArgs, report: ReportViolation) -> None:
    for dist in _of(args, DISTRIBUTION):
        cert = _p(dist, "viewerCertificate", {})
        version = cert.get("minimumProtocolVersion")
        if cert.get("cloudfrontDefaultCertificate") or version not in MODERN_TLS:
            report(
                f"{dist.name}: minimum TLS is {version or 'the default certificate'}, need TLSv1.2_2021+",
                dist.urn,
            )
        for b in _behaviours(dist):
            if b.get("viewerProtocolPolicy") not in SECURE_VIEWER_POLICIES:
                where = b.get("pathPattern", "default behaviour")
                report(f"{dist.name}: {where} allows plain HTTP ({b.get('viewerProtocolPolicy')})", dist.urn)


def waf_attached(args: StackValidationArgs, report: ReportViolation) -> None:
    acls = {str(_p(a, "arn")): a for a in _of(args, WEB_ACL)}
    for dist in _of(args, DISTRIBUTION):
        acl_id = _p(dist, "webAclId")
        if not acl_id:
            report(f"{dist.name} has no WAF web ACL", dist.urn)
            continue
        acl = acls.get(str(acl_id))
        if acl is not None and _p(acl, "scope") != "CLOUDFRONT":
            report(f"{acl.name}: a CloudFront web ACL needs scope CLOUDFRONT", acl.urn)


def logging_on(args: StackValidationArgs, report: ReportViolation) -> None:
    for dist in _of(args, DISTRIBUTION):
        if not (_p(dist, "loggingConfig") or {}).get("bucket"):
            report(f"{dist.name} writes no standard logs (loggingConfig.bucket)", dist.urn)


def range_forwarded_on_segments(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every segment pattern of the catalog has a behaviour that serves byte ranges end to end:
    GET and HEAD allowed, no edge compression, and Range kept out of the cache key so CloudFront
    forwards it to the origin on a miss and serves every range from one stored object."""
    patterns = [p for c in default_catalog().classes if c.range for p in c.patterns]
    policies = {str(_p(c, "id")): c for c in _of(args, CACHE_POLICY)}
    for dist in _of(args, DISTRIBUTION):
        ordered = {b.get("pathPattern"): b for b in _p(dist, "orderedCacheBehaviors", [])}
        for pattern in patterns:
            b = ordered.get(pattern)
            if b is None:
                report(f"{dist.name}: no behaviour for segment pattern {pattern}", dist.urn)
                continue
            if not {"GET", "HEAD"} <= set(b.get("allowedMethods", [])):
                report(f"{dist.name}: {pattern} must allow GET and HEAD", dist.urn)
            if b.get("compress"):
                report(f"{dist.name}: {pattern} compresses at the edge, which breaks byte ranges", dist.urn)
            if (b.get("forwardedValues") or {}).get("headers"):
                report(f"{dist.name}: {pattern} uses legacy forwarded headers", dist.urn)
            policy = policies.get(str(b.get("cachePolicyId")))
            if policy is None:
                continue
            params = _p(policy, "parametersInCacheKeyAndForwardedToOrigin", {})
            headers = params.get("headersConfig") or {}
            names = {h.lower() for h in (headers.get("headers") or {}).get("items") or []}
            if headers.get("headerBehavior") not in (None, "none") and "range" in names:
                report(
                    f"{policy.name}: Range in the cache key of {pattern} splits objects per range", policy.urn
                )


def default_geo_record(args: StackValidationArgs, report: ReportViolation) -> None:
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for record in _of(args, RECORD):
        if _p(record, "geolocationRoutingPolicies"):
            groups[(str(_p(record, "zoneId")), str(_p(record, "name")))].append(record)
    for (_, name), records in groups.items():
        has_default = any(
            g.get("country") == "*" for r in records for g in _p(r, "geolocationRoutingPolicies", [])
        )
        if not has_default:
            report(f"geolocation records for {name} have no default (country '*') record", records[0].urn)
        for r in records:
            if not _p(r, "healthCheckId"):
                report(f"geolocation record {r.name} has no health check", r.urn)
            if _p(r, "ttl", 0) > GEO_TTL_MAX:
                report(f"geolocation record {r.name} has TTL {_p(r, 'ttl')} > {GEO_TTL_MAX}", r.urn)


def alarms_present(args: StackValidationArgs, report: ReportViolation) -> None:
    if not _of(args, DISTRIBUTION):
        return
    topics = {str(_p(t, "arn")) for t in _of(args, TOPIC)}
    alarms = [a for a in _of(args, ALARM) if _p(a, "namespace") == "AWS/CloudFront"]
    for metric, (comparison, threshold, larger_is_laxer) in REQUIRED_ALARMS.items():
        found = [
            a for a in alarms if _p(a, "metricName") == metric and _p(a, "comparisonOperator") == comparison
        ]
        ok = [
            a
            for a in found
            if (_p(a, "threshold", 0) <= threshold if larger_is_laxer else _p(a, "threshold", 0) >= threshold)
            and any(str(x) in topics for x in _p(a, "alarmActions", []))
        ]
        if not ok:
            report(f"no alarm on CloudFront {metric} {comparison} {threshold:g} notifying an SNS topic")


def buckets_versioned_encrypted(args: StackValidationArgs, report: ReportViolation) -> None:
    encryption, versioning = _of(args, SSE), _of(args, VERSIONING)
    origin_domains = {
        str(o.get("domainName", "")) for d in _of(args, DISTRIBUTION) for o in _p(d, "origins", [])
    }
    for bucket in _of(args, BUCKET):
        if not _targets(encryption, bucket):
            report(f"bucket {bucket.name} has no default encryption", bucket.urn)
        is_origin = any(dom.split(".s3.")[0] in _bucket_names(bucket) for dom in origin_domains)
        enabled = [
            v
            for v in _targets(versioning, bucket)
            if (_p(v, "versioningConfiguration") or {}).get("status") == "Enabled"
        ]
        if is_origin and not enabled:
            report(f"origin bucket {bucket.name} is not versioned", bucket.urn)


RULES: dict[str, tuple[str, Rule]] = {
    "no-public-bucket": ("S3 buckets block all public access and grant nothing to anyone", no_public_bucket),
    "oac-only": ("S3 origins are reached only through Origin Access Control", oac_only),
    "tls-1-2-2021-or-newer": ("Viewers use TLSv1.2_2021 or newer, HTTPS only", tls_modern),
    "waf-attached": ("Every distribution has a CLOUDFRONT-scope WAF web ACL", waf_attached),
    "logging-on": ("Every distribution writes standard logs", logging_on),
    "range-forwarded-on-segments": (
        "Segment behaviours forward Range and keep it out of the cache key",
        range_forwarded_on_segments,
    ),
    "default-geo-record": (
        "Geolocation records have a default record, health checks, TTL <= 60",
        default_geo_record,
    ),
    "alarms-present": ("Alarms at the seed thresholds notify an SNS topic", alarms_present),
    "buckets-versioned-encrypted": (
        "Buckets are encrypted, origin buckets versioned",
        buckets_versioned_encrypted,
    ),
}

POLICIES = [
    StackValidationPolicy(
        name=name, description=description, validate=rule, enforcement_level=EnforcementLevel.MANDATORY
    )
    for name, (description, rule) in RULES.items()
]


def violations(resources: list[Any], only: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Run the rules (all, or ONLY) on RESOURCES; rule name -> violation messages (empty if clean)."""
    out: dict[str, list[str]] = {}
    for name, (_, rule) in RULES.items():
        if only is not None and name not in only:
            continue
        found: list[str] = []
        rule(StackValidationArgs(resources), lambda message, urn=None, found=found: found.append(message))
        out[name] = found
    return out
