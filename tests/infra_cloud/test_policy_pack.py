"""The CrossGuard rules: each passes on the program and fails on a deliberately wrong variant.

The rules' validate functions are called directly (``PolicyPack`` is never constructed here: it
starts a gRPC server and blocks). Variants are made either by changing the program's inputs (a
different catalog or TLS constant, captured afresh) or by breaking one recorded resource.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable

import pytest
from pulumi_policy import EnforcementLevel, StackValidationPolicy

from cdnlab.policy import DEFAULT_PATH, from_mapping
from infra.apply import capture_config
from infra.graph import Graph
from infra.policy_pack import rules
from infra.policy_pack.on_graph import check, policy_resources


@pytest.fixture(scope="module")
def base(request: pytest.FixtureRequest) -> Graph:
    from infra import stack_config

    return capture_config(stack_config.load("lab"))


def node(g: Graph, type_: str, name: str):
    return g.named(type_, name)


def drop(g: Graph, type_: str, name: str) -> None:
    g.nodes.remove(g.named(type_, name))


def dist(g: Graph) -> dict:
    return node(g, rules.DISTRIBUTION, "cdn-distribution").state


def test_every_rule_passes_on_the_program(base: Graph) -> None:
    assert check(base) == {name: [] for name in rules.RULES}


def test_policies_are_mandatory_stack_policies() -> None:
    assert [p.name for p in rules.POLICIES] == list(rules.RULES)
    for p in rules.POLICIES:
        assert isinstance(p, StackValidationPolicy) and p.enforcement_level is EnforcementLevel.MANDATORY


def test_policy_validate_called_directly(base: Graph) -> None:
    """Through the pulumi_policy objects themselves, as the analyzer would call them."""
    from pulumi_policy import StackValidationArgs

    resources = policy_resources(base)
    seen: list[str] = []
    for policy in rules.POLICIES:
        policy.validate(StackValidationArgs(resources), lambda msg, urn=None: seen.append(msg))
    assert seen == []


def _public_policy(g: Graph) -> None:
    state = node(g, rules.BUCKET_POLICY, "origins-primary-policy").state
    doc = json.loads(state["policy"])
    doc["Statement"].append({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"})
    state["policy"] = json.dumps(doc)


def _oai_origin(g: Graph) -> None:
    origin = dist(g)["origins"][1]
    del origin["originAccessControlId"]
    origin["s3OriginConfig"] = {"originAccessIdentity": "origin-access-identity/cloudfront/E123"}


def _range_in_key(g: Graph) -> None:
    params = node(g, rules.CACHE_POLICY, "cdn-policies-segment").state[
        "parametersInCacheKeyAndForwardedToOrigin"
    ]
    params["headersConfig"] = {"headerBehavior": "whitelist", "headers": {"items": ["Range"]}}


def _no_default_geo(g: Graph) -> None:
    drop(g, rules.RECORD, "dns-geo-default")


def _geo_without_check(g: Graph) -> None:
    del node(g, rules.RECORD, "dns-geo-eu").state["healthCheckId"]


def _lax_5xx(g: Graph) -> None:
    node(g, rules.ALARM, "monitoring-5xx-error-rate").state["threshold"] = 5.0


def _silent_alarm(g: Graph) -> None:
    node(g, rules.ALARM, "monitoring-cache-hit-rate").state["alarmActions"] = []


BREAKERS: list[tuple[str, str, Callable[[Graph], None], str]] = [
    (
        "no-public-bucket",
        "missing public access block",
        lambda g: drop(g, rules.PUBLIC_ACCESS_BLOCK, "origins-logs-public-access-block"),
        "bucket origins-logs has no public access block",
    ),
    (
        "no-public-bucket",
        "one block switched off",
        lambda g: node(g, rules.PUBLIC_ACCESS_BLOCK, "origins-replica-public-access-block").state.update(
            restrictPublicBuckets=False
        ),
        "bucket origins-replica has no public access block",
    ),
    ("no-public-bucket", "policy open to anyone", _public_policy, "origins-primary-policy allows anyone"),
    (
        "no-public-bucket",
        "public canned ACL",
        lambda g: node(g, rules.BUCKET, "origins-primary").state.update(acl="public-read"),
        "public canned ACL",
    ),
    ("oac-only", "legacy identity", _oai_origin, "origin s3-replica uses an origin access identity"),
    (
        "oac-only",
        "no OAC at all",
        lambda g: dist(g)["origins"][0].pop("originAccessControlId"),
        "S3 origin s3-primary has no Origin Access Control",
    ),
    (
        "oac-only",
        "OAC that does not sign",
        lambda g: node(g, rules.OAC, "cdn-oac-primary").state.update(signingBehavior="never"),
        "must sign always",
    ),
    (
        "tls-1-2-2021-or-newer",
        "old TLS policy",
        lambda g: dist(g)["viewerCertificate"].update(minimumProtocolVersion="TLSv1.2_2019"),
        "minimum TLS is TLSv1.2_2019",
    ),
    (
        "tls-1-2-2021-or-newer",
        "plain HTTP allowed",
        lambda g: dist(g)["orderedCacheBehaviors"][0].update(viewerProtocolPolicy="allow-all"),
        "*.mpd allows plain HTTP",
    ),
    ("waf-attached", "no web ACL", lambda g: dist(g).pop("webAclId"), "has no WAF web ACL"),
    (
        "waf-attached",
        "regional web ACL",
        lambda g: node(g, rules.WEB_ACL, "cdn-waf").state.update(scope="REGIONAL"),
        "needs scope CLOUDFRONT",
    ),
    ("logging-on", "no standard logs", lambda g: dist(g).pop("loggingConfig"), "writes no standard logs"),
    (
        "range-forwarded-on-segments",
        "Range in the cache key",
        _range_in_key,
        "Range in the cache key of *.m4s",
    ),
    (
        "range-forwarded-on-segments",
        "segment behaviour missing",
        lambda g: dist(g).update(
            orderedCacheBehaviors=[b for b in dist(g)["orderedCacheBehaviors"] if b["pathPattern"] != "*.ts"]
        ),
        "no behaviour for segment pattern *.ts",
    ),
    (
        "range-forwarded-on-segments",
        "HEAD not allowed",
        lambda g: next(b for b in dist(g)["orderedCacheBehaviors"] if b["pathPattern"] == "*.mp4").update(
            allowedMethods=["GET"]
        ),
        "*.mp4 must allow GET and HEAD",
    ),
    ("default-geo-record", "no default record", _no_default_geo, "have no default (country '*') record"),
    (
        "default-geo-record",
        "record without a health check",
        _geo_without_check,
        "dns-geo-eu has no health check",
    ),
    (
        "default-geo-record",
        "long TTL",
        lambda g: node(g, rules.RECORD, "dns-geo-na").state.update(ttl=300),
        "has TTL 300 > 60",
    ),
    (
        "alarms-present",
        "cache hit rate alarm missing",
        lambda g: drop(g, rules.ALARM, "monitoring-cache-hit-rate"),
        "CacheHitRate LessThanThreshold 80",
    ),
    ("alarms-present", "5xx threshold too lax", _lax_5xx, "5xxErrorRate GreaterThanThreshold 0.1"),
    ("alarms-present", "alarm notifies nobody", _silent_alarm, "CacheHitRate"),
    (
        "buckets-versioned-encrypted",
        "replica not versioned",
        lambda g: drop(g, rules.VERSIONING, "origins-replica-versioning"),
        "origin bucket origins-replica is not versioned",
    ),
    (
        "buckets-versioned-encrypted",
        "log bucket unencrypted",
        lambda g: drop(g, rules.SSE, "origins-logs-encryption"),
        "bucket origins-logs has no default encryption",
    ),
]


@pytest.mark.parametrize(
    ("rule", "variant", "breaker", "message"), BREAKERS, ids=[f"{r}: {v}" for r, v, _, _ in BREAKERS]
)
def test_rule_fails_on_a_wrong_variant(base: Graph, rule: str, variant: str, breaker, message: str) -> None:
    g = copy.deepcopy(base)
    breaker(g)
    result = check(g)
    assert any(message in m for m in result[rule]), result[rule]
    # Breaking one thing trips only the rule about it.
    assert {k for k, v in result.items() if v} == {rule}


def test_every_rule_has_a_failing_variant() -> None:
    assert {r for r, *_ in BREAKERS} == set(rules.RULES)


def test_program_variant_with_old_tls_fails(
    lab_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import infra.distribution

    monkeypatch.setattr(infra.distribution, "MIN_TLS", "TLSv1.1_2016")
    result = check(capture_config(lab_config), only=["tls-1-2-2021-or-newer"])
    assert result["tls-1-2-2021-or-newer"] == [
        "cdn-distribution: minimum TLS is TLSv1.1_2016, need TLSv1.2_2021+"
    ]


def test_program_variant_with_compressed_segments_fails(lab_config: dict[str, str]) -> None:
    data = tomllib.loads(DEFAULT_PATH.read_text())
    next(c for c in data["class"] if c["name"] == "segment")["compress"] = True
    result = check(
        capture_config(lab_config, catalog=from_mapping(data)), only=["range-forwarded-on-segments"]
    )
    assert sorted(result["range-forwarded-on-segments"]) == sorted(
        f"cdn-distribution: {p} compresses at the edge, which breaks byte ranges"
        for p in ("*.m4s", "*.mp4", "*.ts")
    )
