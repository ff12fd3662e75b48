"""The CloudFront distribution: S3 origins behind Origin Shield and OAC, an origin group for failover,
behaviours from the policy catalog, a signed-URL check, security headers, TLS, WAF and logs.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from cdnlab.policy import Catalog
from infra.cache_policies import BehaviourPolicies, CachePolicies, behaviour_args
from infra.origins import Origins
from infra.settings import Settings
from infra.viewer_request import signing_function
from infra.waf import web_acl

PRIMARY_ORIGIN = "s3-primary"
REPLICA_ORIGIN = "s3-replica"
ORIGIN_GROUP = "s3-failover"
FAILOVER_STATUS_CODES = [500, 502, 503, 504]
MIN_TLS = "TLSv1.2_2021"
HSTS_MAX_AGE = 63_072_000  # two years, the preload list's minimum is one


def response_headers_policy_args(prefix: str, cors_origins: list[str]) -> dict:
    return {
        "name": f"{prefix}-security-headers",
        "comment": "HSTS and friends on every response; CORS for players on other origins",
        "security_headers_config": {
            "strict_transport_security": {
                "access_control_max_age_sec": HSTS_MAX_AGE,
                "include_subdomains": True,
                "preload": True,
                "override": True,
            },
            "content_type_options": {"override": True},
            "frame_options": {"frame_option": "DENY", "override": True},
            "referrer_policy": {"referrer_policy": "strict-origin-when-cross-origin", "override": True},
            "xss_protection": {"protection": True, "mode_block": True, "override": True},
        },
        "cors_config": {
            "access_control_allow_credentials": False,
            "access_control_allow_headers": {"items": ["Range", "Origin"]},
            "access_control_allow_methods": {"items": ["GET", "HEAD"]},
            "access_control_allow_origins": {"items": list(cors_origins)},
            "access_control_expose_headers": {"items": ["Content-Range", "Content-Length", "ETag"]},
            "access_control_max_age_sec": 86_400,
            "origin_override": True,
        },
    }


class Cdn(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        catalog: Catalog,
        origins: Origins,
        zone_id: pulumi.Input[str],
        signing_keys: pulumi.Output[dict[str, str]],
        us_east_1: aws.Provider,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cdnlab:infra:Cdn", name, None, opts)
        prefix = settings.bucket_prefix
        child = pulumi.ResourceOptions(parent=self)
        in_us_east_1 = pulumi.ResourceOptions(parent=self, provider=us_east_1)

        self.oacs = {
            label: aws.cloudfront.OriginAccessControl(
                f"{name}-oac-{label}",
                name=f"{prefix}-{label}",
                description=f"CloudFront reads the {label} origin bucket, signed with SigV4",
                origin_access_control_origin_type="s3",
                signing_behavior="always",
                signing_protocol="sigv4",
                opts=child,
            )
            for label in ("primary", "replica")
        }
        self.policies = CachePolicies(f"{name}-policies", catalog=catalog, prefix=prefix, opts=child)
        self.headers_policy = aws.cloudfront.ResponseHeadersPolicy(
            f"{name}-security-headers",
            **response_headers_policy_args(prefix, settings.cors_origins),
            opts=child,
        )
        self.signing_function = signing_function(f"{name}-verify-signed-url", prefix, signing_keys, child)
        self.web_acl = web_acl(f"{name}-waf", prefix, settings.waf_rate_limit, tags, in_us_east_1)
        certificate_arn = self._certificate(name, settings, zone_id, tags, in_us_east_1)

        ids: BehaviourPolicies = self.policies.ids()
        common = {
            "target_origin_id": ORIGIN_GROUP,
            "policies": ids,
            "response_headers_policy_id": self.headers_policy.id,
            "signing_function_arn": self.signing_function.arn,
        }
        logs = origins.logs
        self.distribution = aws.cloudfront.Distribution(
            f"{name}-distribution",
            comment=f"cdnlab {pulumi.get_stack()}: S3 origins behind Origin Shield",
            enabled=True,
            aliases=[settings.cdn_fqdn],
            price_class="PriceClass_All",
            http_version="http2and3",
            is_ipv6_enabled=True,
            web_acl_id=self.web_acl.arn,
            origins=[
                self._origin(PRIMARY_ORIGIN, origins.primary.bucket, "primary", settings.shield_region),
                self._origin(REPLICA_ORIGIN, origins.replica.bucket, "replica", settings.replica_region),
            ],
            origin_groups=[
                {
                    "origin_id": ORIGIN_GROUP,
                    "failover_criteria": {"status_codes": FAILOVER_STATUS_CODES},
                    "members": [{"origin_id": PRIMARY_ORIGIN}, {"origin_id": REPLICA_ORIGIN}],
                }
            ],
            default_cache_behavior=behaviour_args(catalog.default, **common),
            ordered_cache_behaviors=[
                behaviour_args(c, path_pattern=pattern, **common) for pattern, c in catalog.ordered_patterns()
            ],
            logging_config={
                "bucket": logs.bucket.bucket_domain_name,
                "prefix": "cloudfront/",
                "include_cookies": False,
            },
            viewer_certificate={
                "acm_certificate_arn": certificate_arn,
                "ssl_support_method": "sni-only",
                "minimum_protocol_version": MIN_TLS,
            },
            restrictions={"geo_restriction": {"restriction_type": "none"}},
            tags=tags,
            # Standard logs are delivered with ACLs: the log bucket must allow them first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs.ownership]),
        )
        # CacheHitRate and OriginLatency exist only with the additional metrics subscription.
        self.monitoring = aws.cloudfront.MonitoringSubscription(
            f"{name}-additional-metrics",
            distribution_id=self.distribution.id,
            monitoring_subscription={
                "realtime_metrics_subscription_config": {"realtime_metrics_subscription_status": "Enabled"}
            },
            opts=child,
        )
        self.register_outputs(
            {"domain_name": self.distribution.domain_name, "distribution_id": self.distribution.id}
        )

    def _origin(self, origin_id: str, bucket: aws.s3.Bucket, label: str, shield_region: str) -> dict:
        # OAC only: no s3_origin_config, so no legacy origin access identity can sneak in.
        return {
            "origin_id": origin_id,
            "domain_name": bucket.bucket_regional_domain_name,
            "origin_access_control_id": self.oacs[label].id,
            "origin_shield": {"enabled": True, "origin_shield_region": shield_region},
            "connection_attempts": 3,
            "connection_timeout": 10,
        }

    def _certificate(
        self,
        name: str,
        settings: Settings,
        zone_id: pulumi.Input[str],
        tags: dict[str, str],
        in_us_east_1: pulumi.ResourceOptions,
    ) -> pulumi.Input[str]:
        """An existing certificate from config, or a DNS-validated one for the CDN name (us-east-1)."""
        if settings.certificate_arn:
            return settings.certificate_arn
        self.certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=settings.cdn_fqdn,
            validation_method="DNS",
            key_algorithm="EC_prime256v1",
            tags=tags,
            opts=in_us_east_1,
        )
        option = self.certificate.domain_validation_options[0]
        self.validation_record = aws.route53.Record(
            f"{name}-certificate-validation-record",
            zone_id=zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=60,
            allow_overwrite=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.certificate_validation = aws.acm.CertificateValidation(
            f"{name}-certificate-validation",
            certificate_arn=self.certificate.arn,
            validation_record_fqdns=[self.validation_record.fqdn],
            opts=in_us_east_1,
        )
        return self.certificate_validation.certificate_arn
