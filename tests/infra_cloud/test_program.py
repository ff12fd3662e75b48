"""The Pulumi program under mocks: every property issue 3 asks for, asserted on the recorded inputs.

Each test captures the whole program afresh (a new event loop and ``set_mocks`` inside
``infra.graph.capture``, the program run inside ``@pulumi.runtime.test``) and asserts afterwards.
"""

from __future__ import annotations

import json

from cdnlab.policy import default_catalog
from infra.apply import capture_config
from infra.graph import CLOUDFRONT_ZONE_ID, Graph, ref

BUCKET = "aws:s3/bucket:Bucket"
DIST = "aws:cloudfront/distribution:Distribution"
OAC = "aws:cloudfront/originAccessControl:OriginAccessControl"
CACHE_POLICY = "aws:cloudfront/cachePolicy:CachePolicy"
RECORD = "aws:route53/record:Record"
HEALTH = "aws:route53/healthCheck:HealthCheck"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
PRIMARY, REPLICA, LOGS = (
    "cdnlab-lab-origin-us-east-1",
    "cdnlab-lab-origin-eu-west-1",
    "cdnlab-lab-logs-us-east-1",
)


def inputs(g: Graph, type_: str, name: str) -> dict:
    return g.named(type_, name).inputs


def by_bucket(g: Graph, type_: str) -> dict[str, dict]:
    return {n.inputs["bucket"]: n.inputs for n in g.of_type(type_)}


def test_origin_buckets_private_versioned_encrypted_replicated(program: Graph) -> None:
    g = program
    buckets = {n.inputs["bucket"]: n for n in g.of_type(BUCKET)}
    assert set(buckets) == {PRIMARY, REPLICA, LOGS}
    assert {b: g.region_of(n) for b, n in buckets.items()} == {
        PRIMARY: "us-east-1",
        REPLICA: "eu-west-1",
        LOGS: "us-east-1",
    }
    blocks = by_bucket(g, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for b in buckets:
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        assert all(blocks[b][f] is True for f in flags), b
    ownership = by_bucket(g, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert (
        ownership[PRIMARY]["rule"] == ownership[REPLICA]["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    )
    # CloudFront standard logs are delivered with ACLs.
    assert ownership[LOGS]["rule"] == {"objectOwnership": "BucketOwnerPreferred"}
    sse = by_bucket(
        g, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    for b in buckets:
        assert sse[b]["rules"] == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]
    versioning = by_bucket(g, "aws:s3/bucketVersioning:BucketVersioning")
    assert {b: v["versioningConfiguration"]["status"] for b, v in versioning.items()} == {
        PRIMARY: "Enabled",
        REPLICA: "Enabled",
    }
    lifecycle = by_bucket(g, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    origin_rules = {r["id"]: r for r in lifecycle[PRIMARY]["rules"]}
    assert origin_rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert origin_rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": 7
    }
    assert lifecycle[REPLICA]["rules"] == lifecycle[PRIMARY]["rules"]
    assert lifecycle[LOGS]["rules"][0]["expiration"] == {"days": 90}

    replication = g.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert len(replication) == 1
    rep = replication[0].inputs
    assert rep["bucket"] == PRIMARY
    assert rep["role"] == ref("aws:iam/role:Role", "origins-replication-role", "arn")
    (rule,) = rep["rules"]
    assert rule["status"] == "Enabled" and rule["deleteMarkerReplication"] == {"status": "Enabled"}
    assert rule["destination"]["bucket"] == f"arn:aws:s3:::{REPLICA}"
    # Replication needs versioning on both sides first.
    deps = {d.rsplit("::", 1)[-1] for d in replication[0].dependencies}
    assert {"origins-primary-versioning", "origins-replica-versioning"} <= deps
    trust = json.loads(inputs(g, "aws:iam/role:Role", "origins-replication-role")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    perms = json.loads(inputs(g, "aws:iam/rolePolicy:RolePolicy", "origins-replication-policy")["policy"])
    actions = {a for st in perms["Statement"] for a in st["Action"]}
    assert {"s3:GetObjectVersionForReplication", "s3:ReplicateObject", "s3:ReplicateDelete"} <= actions

    logging = by_bucket(g, "aws:s3/bucketLogging:BucketLogging")
    assert logging[PRIMARY]["targetBucket"] == LOGS

    policies = by_bucket(g, "aws:s3/bucketPolicy:BucketPolicy")
    dist_arn = ref(DIST, "cdn-distribution", "arn")
    for b in (PRIMARY, REPLICA):
        statements = json.loads(policies[b]["policy"])["Statement"]
        allow = [s for s in statements if s["Effect"] == "Allow"]
        assert allow == [
            {
                "Sid": "CloudFrontOriginAccessControl",
                "Effect": "Allow",
                "Principal": {"Service": "cloudfront.amazonaws.com"},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{b}/*",
                "Condition": {"StringEquals": {"AWS:SourceArn": dist_arn}},
            }
        ]
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_distribution(program: Graph) -> None:
    g = program
    d = inputs(g, DIST, "cdn-distribution")
    oacs = {n.name: n.inputs for n in g.of_type(OAC)}
    assert set(oacs) == {"cdn-oac-primary", "cdn-oac-replica"}
    for oac in oacs.values():
        assert (oac["originAccessControlOriginType"], oac["signingBehavior"], oac["signingProtocol"]) == (
            "s3",
            "always",
            "sigv4",
        )
    origins = {o["originId"]: o for o in d["origins"]}
    assert origins["s3-primary"] == {
        "originId": "s3-primary",
        "domainName": f"{PRIMARY}.s3.us-east-1.amazonaws.com",
        "originAccessControlId": ref(OAC, "cdn-oac-primary", "id"),
        "originShield": {"enabled": True, "originShieldRegion": "us-east-1"},
        "connectionAttempts": 3,
        "connectionTimeout": 10,
    }
    assert origins["s3-replica"]["domainName"] == f"{REPLICA}.s3.eu-west-1.amazonaws.com"
    assert origins["s3-replica"]["originAccessControlId"] == ref(OAC, "cdn-oac-replica", "id")
    assert origins["s3-replica"]["originShield"] == {"enabled": True, "originShieldRegion": "eu-west-1"}
    assert all("s3OriginConfig" not in o for o in d["origins"])  # OAC only, no legacy identity
    assert d["originGroups"] == [
        {
            "originId": "s3-failover",
            "failoverCriteria": {"statusCodes": [500, 502, 503, 504]},
            "members": [{"originId": "s3-primary"}, {"originId": "s3-replica"}],
        }
    ]
    behaviours = [d["defaultCacheBehavior"], *d["orderedCacheBehaviors"]]
    for b in behaviours:
        assert b["viewerProtocolPolicy"] == "https-only"
        assert b["targetOriginId"] == "s3-failover"
        assert b["allowedMethods"] == b["cachedMethods"] == ["GET", "HEAD"]
        assert b["responseHeadersPolicyId"] == ref(
            "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy", "cdn-security-headers", "id"
        )
    cert_arn = ref("aws:acm/certificate:Certificate", "cdn-certificate", "arn")
    assert d["viewerCertificate"] == {
        "acmCertificateArn": cert_arn,
        "sslSupportMethod": "sni-only",
        "minimumProtocolVersion": "TLSv1.2_2021",
    }
    assert (d["httpVersion"], d["isIpv6Enabled"], d["priceClass"], d["enabled"]) == (
        "http2and3",
        True,
        "PriceClass_All",
        True,
    )
    assert d["aliases"] == ["cdn.cdnlab.test"]
    assert d["loggingConfig"] == {
        "bucket": f"{LOGS}.s3.amazonaws.com",
        "prefix": "cloudfront/",
        "includeCookies": False,
    }
    assert d["webAclId"] == ref("aws:wafv2/webAcl:WebAcl", "cdn-waf", "arn")
    assert d["restrictions"] == {"geoRestriction": {"restrictionType": "none"}}

    # The ACM certificate lives in us-east-1 and is validated through a record in our zone.
    cert = g.named("aws:acm/certificate:Certificate", "cdn-certificate")
    assert g.region_of(cert) == "us-east-1"
    assert cert.inputs["domainName"] == "cdn.cdnlab.test" and cert.inputs["validationMethod"] == "DNS"
    validation = g.named("aws:acm/certificateValidation:CertificateValidation", "cdn-certificate-validation")
    assert g.region_of(validation) == "us-east-1"
    vrec = inputs(g, RECORD, "cdn-certificate-validation-record")
    assert vrec["zoneId"] == ref("aws:route53/zone:Zone", "dns-zone", "zoneId")
    assert vrec["records"] == [
        ref(
            "aws:acm/certificate:Certificate",
            "cdn-certificate",
            "domainValidationOptions.0.resourceRecordValue",
        )
    ]

    headers = inputs(g, "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy", "cdn-security-headers")
    sec = headers["securityHeadersConfig"]
    assert sec["strictTransportSecurity"] == {
        "accessControlMaxAgeSec": 63_072_000,
        "includeSubdomains": True,
        "preload": True,
        "override": True,
    }
    assert sec["contentTypeOptions"] == {"override": True}
    assert sec["frameOptions"]["frameOption"] == "DENY"
    assert sec["referrerPolicy"]["referrerPolicy"] == "strict-origin-when-cross-origin"
    assert "Range" in headers["corsConfig"]["accessControlAllowHeaders"]["items"]

    sub = inputs(g, "aws:cloudfront/monitoringSubscription:MonitoringSubscription", "cdn-additional-metrics")
    assert sub["distributionId"] == ref(DIST, "cdn-distribution", "id")
    assert sub["monitoringSubscription"]["realtimeMetricsSubscriptionConfig"] == {
        "realtimeMetricsSubscriptionStatus": "Enabled"
    }


def test_behaviours_and_policies_come_from_the_catalog(program: Graph) -> None:
    g, catalog = program, default_catalog()
    d = inputs(g, DIST, "cdn-distribution")
    ordered = d["orderedCacheBehaviors"]
    assert [b["pathPattern"] for b in ordered] == [p for p, _ in catalog.ordered_patterns()]
    fn_arn = ref("aws:cloudfront/function:Function", "cdn-verify-signed-url", "arn")
    orp = ref("aws:cloudfront/originRequestPolicy:OriginRequestPolicy", "cdn-policies-s3-origin", "id")
    for b, (pattern, c) in zip(ordered, catalog.ordered_patterns(), strict=True):
        assert b["cachePolicyId"] == ref(CACHE_POLICY, f"cdn-policies-{c.name}", "id"), pattern
        assert b["compress"] is c.compress, pattern
        assert b["originRequestPolicyId"] == orp
        want = [{"eventType": "viewer-request", "functionArn": fn_arn}] if c.signed else []
        assert b["functionAssociations"] == want, pattern
    assert d["defaultCacheBehavior"]["cachePolicyId"] == ref(CACHE_POLICY, "cdn-policies-default", "id")

    for c in catalog.classes:
        p = inputs(g, CACHE_POLICY, f"cdn-policies-{c.name}")
        assert (p["minTtl"], p["defaultTtl"], p["maxTtl"]) == (c.min_ttl, c.default_ttl, c.max_ttl), c.name
        params = p["parametersInCacheKeyAndForwardedToOrigin"]
        assert params["headersConfig"] == {"headerBehavior": "none"}  # Range is never in the key
        assert params["cookiesConfig"] == {"cookieBehavior": "none"}
        if c.query_key:
            assert params["queryStringsConfig"] == {
                "queryStringBehavior": "whitelist",
                "queryStrings": {"items": ["profile", "language", "version"]},
            }
        else:
            assert params["queryStringsConfig"] == {"queryStringBehavior": "none"}
    seg = {b["pathPattern"]: b for b in ordered}
    for pattern in ("*.m4s", "*.mp4", "*.ts"):
        assert seg[pattern]["compress"] is False
        assert seg[pattern]["cachePolicyId"] == ref(CACHE_POLICY, "cdn-policies-segment", "id")
    manifest = inputs(g, CACHE_POLICY, "cdn-policies-manifest")
    assert manifest["defaultTtl"] == 300
    assert inputs(g, CACHE_POLICY, "cdn-policies-image")["defaultTtl"] == 2_592_000
    segment = inputs(g, CACHE_POLICY, "cdn-policies-segment")
    assert (segment["defaultTtl"], segment["maxTtl"]) == (86_400, 31_536_000)
    orp_inputs = inputs(g, "aws:cloudfront/originRequestPolicy:OriginRequestPolicy", "cdn-policies-s3-origin")
    assert orp_inputs["headersConfig"]["headers"]["items"] == catalog.origin_request.headers


def test_signing_function_resource(program: Graph) -> None:
    fn = inputs(program, "aws:cloudfront/function:Function", "cdn-verify-signed-url")
    assert fn["runtime"] == "cloudfront-js-2.0" and fn["publish"] is True
    assert '{"lab1": "lab-signing-key-not-a-secret-0001"}' in fn["code"]
    assert "createHmac('sha256'" in fn["code"]


def test_waf(program: Graph) -> None:
    node = program.named("aws:wafv2/webAcl:WebAcl", "cdn-waf")
    acl = node.inputs
    assert acl["scope"] == "CLOUDFRONT" and program.region_of(node) == "us-east-1"
    assert acl["defaultAction"] == {"allow": {}}
    rules = {r["name"]: r for r in acl["rules"]}
    rate = rules["rate-limit-per-ip"]
    assert rate["priority"] == 0 and rate["action"] == {"block": {}}
    assert rate["statement"]["rateBasedStatement"]["limit"] == 2000
    assert rate["statement"]["rateBasedStatement"]["aggregateKeyType"] == "IP"
    for group in (
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    ):
        assert rules[group]["statement"]["managedRuleGroupStatement"] == {"vendorName": "AWS", "name": group}
        assert rules[group]["overrideAction"] == {"none": {}}
    assert len({r["priority"] for r in acl["rules"]}) == len(acl["rules"])


def test_dns(program: Graph) -> None:
    g = program
    zone_id = ref("aws:route53/zone:Zone", "dns-zone", "zoneId")
    assert inputs(g, "aws:route53/zone:Zone", "dns-zone")["name"] == "cdnlab.test"
    geo = {
        r.inputs["setIdentifier"]: r.inputs
        for r in g.of_type(RECORD)
        if r.inputs.get("geolocationRoutingPolicies")
    }
    assert set(geo) == {"NA", "EU", "AS", "default"}
    for code, r in geo.items():
        assert (r["name"], r["type"], r["ttl"], r["zoneId"]) == ("play.cdnlab.test", "A", 60, zone_id)
        want = {"country": "*"} if code == "default" else {"continent": code}
        assert r["geolocationRoutingPolicies"] == [want]
        assert r["healthCheckId"].startswith("{{ref|aws:route53/healthCheck:HealthCheck|dns-health-")
    assert geo["NA"]["records"] == ["192.0.2.10", "192.0.2.11"]
    checks = {n.name: n.inputs for n in g.of_type(HEALTH)}
    # Two addresses: a check each and a calculated parent; one address: the check itself.
    assert geo["NA"]["healthCheckId"] == ref(HEALTH, "dns-health-na", "id")
    assert checks["dns-health-na"]["type"] == "CALCULATED"
    assert checks["dns-health-na"]["childHealthThreshold"] == 1
    assert checks["dns-health-na"]["childHealthchecks"] == [
        ref(HEALTH, f"dns-health-na-{i}", "id") for i in (0, 1)
    ]
    assert geo["AS"]["healthCheckId"] == ref(HEALTH, "dns-health-as-0", "id")
    probe = checks["dns-health-na-0"]
    assert (probe["type"], probe["ipAddress"], probe["port"], probe["resourcePath"]) == (
        "HTTPS",
        "192.0.2.10",
        443,
        "/healthz",
    )
    assert probe["fqdn"] == "play.cdnlab.test" and probe["enableSni"] is True

    for rtype in ("a", "aaaa"):
        alias = inputs(g, RECORD, f"dns-cdn-{rtype}")
        assert alias["name"] == "cdn.cdnlab.test" and alias["type"] == rtype.upper()
        assert alias["aliases"] == [
            {
                "name": ref(DIST, "cdn-distribution", "domainName"),
                "zoneId": CLOUDFRONT_ZONE_ID,
                "evaluateTargetHealth": False,
            }
        ]
    appliances = {
        (r.inputs["name"], r.inputs["type"]): r.inputs
        for r in g.of_type(RECORD)
        if r.name.startswith("dns-oca-")
    }
    assert set(appliances) == {
        ("oca1.isp-a-nyc.oca.cdnlab.test", "A"),
        ("oca1.isp-a-nyc.oca.cdnlab.test", "AAAA"),
        ("oca2.isp-a-nyc.oca.cdnlab.test", "A"),
        ("oca1.isp-b-fra.oca.cdnlab.test", "A"),
    }
    assert appliances[("oca1.isp-b-fra.oca.cdnlab.test", "A")]["records"] == ["203.0.113.21"]
    assert all(r["ttl"] == 60 for r in appliances.values())


def test_monitoring(program: Graph) -> None:
    g = program
    topic = g.named("aws:sns/topic:Topic", "monitoring-alarms")
    assert g.region_of(topic) == "us-east-1"
    topic_arn = ref("aws:sns/topic:Topic", "monitoring-alarms", "arn")
    alarms = {n.inputs["metricName"]: n for n in g.of_type(ALARM)}
    expect = {
        "5xxErrorRate": ("GreaterThanThreshold", 0.1, "critical"),
        "4xxErrorRate": ("GreaterThanThreshold", 1, "warning"),
        "CacheHitRate": ("LessThanThreshold", 80, "warning"),
        "OriginLatency": ("GreaterThanThreshold", 500, "warning"),
    }
    assert set(alarms) == set(expect)
    for metric, (op, threshold, severity) in expect.items():
        node = alarms[metric]
        a = node.inputs
        assert g.region_of(node) == "us-east-1"
        assert (a["comparisonOperator"], a["threshold"], a["tags"]["severity"]) == (op, threshold, severity)
        assert a["namespace"] == "AWS/CloudFront"
        assert a["dimensions"] == {"DistributionId": ref(DIST, "cdn-distribution", "id"), "Region": "Global"}
        assert a["alarmActions"] == a["okActions"] == [topic_arn]
    assert alarms["OriginLatency"].inputs["extendedStatistic"] == "p95"
    assert "statistic" not in alarms["OriginLatency"].inputs
    assert not g.of_type("aws:sns/topicSubscription:TopicSubscription")  # no alarmEmail in the lab


def test_stack_outputs(program: Graph) -> None:
    assert program.outputs == {
        "distribution_domain": ref(DIST, "cdn-distribution", "domainName"),
        "distribution_id": ref(DIST, "cdn-distribution", "id"),
        "cdn_fqdn": "cdn.cdnlab.test",
        "primary_bucket": PRIMARY,
        "replica_bucket": REPLICA,
        "log_bucket": LOGS,
        "zone_id": ref("aws:route53/zone:Zone", "dns-zone", "zoneId"),
        "name_servers": [ref("aws:route53/zone:Zone", "dns-zone", f"nameServers.{i}") for i in range(4)],
        "alarm_topic_arn": ref("aws:sns/topic:Topic", "monitoring-alarms", "arn"),
        "web_acl_arn": ref("aws:wafv2/webAcl:WebAcl", "cdn-waf", "arn"),
    }


def test_existing_certificate_and_alarm_email(lab_config: dict[str, str]) -> None:
    cfg = {
        **lab_config,
        "cdnlab:certificateArn": "arn:aws:acm:us-east-1:111122223333:certificate/abc",
        "cdnlab:alarmEmail": "oncall@example.com",
    }
    g = capture_config(cfg)
    assert not g.of_type("aws:acm/certificate:Certificate")
    d = inputs(g, DIST, "cdn-distribution")
    assert d["viewerCertificate"]["acmCertificateArn"] == "arn:aws:acm:us-east-1:111122223333:certificate/abc"
    (sub,) = g.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sub.inputs["protocol"] == "email" and sub.inputs["endpoint"] == "oncall@example.com"


def test_prod_stack_file_builds(lab_config: dict[str, str]) -> None:
    from infra import stack_config

    cfg = stack_config.load("prod", ['cdnlab:signingKeys={"k1": "0123456789abcdef0123"}'])
    cfg["cdnlab:applianceInventory"] = "inventories/lab/appliances.toml"  # prod's inventory is the user's
    g = capture_config(cfg)
    geo = {r.inputs["setIdentifier"] for r in g.of_type(RECORD) if r.inputs.get("geolocationRoutingPolicies")}
    assert geo == {"NA", "SA", "EU", "AF", "AS", "OC", "default"}
    assert inputs(g, DIST, "cdn-distribution")["aliases"] == ["cdn.example.com"]
    assert g.of_type("aws:sns/topicSubscription:TopicSubscription")
