"""The WAFv2 web ACL in front of the distribution (scope CLOUDFRONT, so it lives in us-east-1).

A per-IP rate limit first (it stops floods before the managed rules spend capacity on them), then
AWS managed rule groups: IP reputation, known bad inputs, and the common rule set.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesCommonRuleSet",
)


def _visibility(metric: str) -> dict:
    return {"cloudwatch_metrics_enabled": True, "sampled_requests_enabled": True, "metric_name": metric}


def web_acl_args(prefix: str, rate_limit: int) -> dict:
    rules: list[dict] = [
        {
            "name": "rate-limit-per-ip",
            "priority": 0,
            "action": {"block": {}},
            "statement": {
                "rate_based_statement": {
                    "limit": rate_limit,
                    "aggregate_key_type": "IP",
                    "evaluation_window_sec": 300,
                }
            },
            "visibility_config": _visibility(f"{prefix}-rate-limit"),
        }
    ]
    for i, group in enumerate(MANAGED_RULE_GROUPS, start=1):
        rules.append(
            {
                "name": group,
                "priority": i,
                "override_action": {"none": {}},
                "statement": {"managed_rule_group_statement": {"vendor_name": "AWS", "name": group}},
                "visibility_config": _visibility(f"{prefix}-{group}"),
            }
        )
    return {
        "name": f"{prefix}-cdn",
        "description": "cdnlab CloudFront protection: per-IP rate limit and AWS managed rules",
        "scope": "CLOUDFRONT",
        "default_action": {"allow": {}},
        "rules": rules,
        "visibility_config": _visibility(f"{prefix}-cdn"),
    }


def web_acl(
    name: str, prefix: str, rate_limit: int, tags: dict[str, str], opts: pulumi.ResourceOptions
) -> aws.wafv2.WebAcl:
    return aws.wafv2.WebAcl(name, **web_acl_args(prefix, rate_limit), tags=tags, opts=opts)
