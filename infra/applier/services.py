"""IAM, ACM, WAFv2, SNS and CloudWatch."""

from __future__ import annotations

import time
from typing import Any

from infra.applier.base import ApplyError, Attrs, Context, aws_tags, caller_reference, creates
from infra.graph import Node

# Where a mechanical camelCase -> PascalCase conversion gets the AWS spelling wrong.
_SPELLING = {"cloudwatchMetricsEnabled": "CloudWatchMetricsEnabled"}


def pascal(value: Any) -> Any:
    """Pulumi's camelCase input keys as the AWS API's PascalCase (WAFv2 rules are regular enough)."""
    if isinstance(value, dict):
        return {_SPELLING.get(k, k[:1].upper() + k[1:]): pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value


@creates("aws:iam/role:Role", {"assumeRolePolicy", "tags", "name"})
def role(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    name = i.get("name") or f"cdnlab-{node.name}"[:64]
    created = ctx.client("iam", "us-east-1").create_role(
        RoleName=name, AssumeRolePolicyDocument=i["assumeRolePolicy"], Tags=aws_tags(i.get("tags"))
    )
    return {"id": name, "name": name, "arn": created["Role"]["Arn"]}


@creates("aws:iam/rolePolicy:RolePolicy", {"role", "policy", "name"})
def role_policy(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    name = i.get("name") or node.name
    ctx.client("iam", "us-east-1").put_role_policy(
        RoleName=i["role"], PolicyName=name, PolicyDocument=i["policy"]
    )
    return {"id": f"{i['role']}:{name}"}


def _wait(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ApplyError(f"{what}: gave up after {timeout:.0f} s")
        time.sleep(0.5)


@creates("aws:acm/certificate:Certificate", {"domainName", "validationMethod", "keyAlgorithm", "tags"})
def certificate(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    acm = ctx.client("acm", ctx.region(node))
    args: dict[str, Any] = {
        "DomainName": i["domainName"],
        "ValidationMethod": i["validationMethod"],
        "IdempotencyToken": caller_reference(node).replace("-", "")[:32],
    }
    if i.get("keyAlgorithm"):
        args["KeyAlgorithm"] = i["keyAlgorithm"]
    if i.get("tags"):
        args["Tags"] = aws_tags(i["tags"])
    arn = acm.request_certificate(**args)["CertificateArn"]

    def record() -> dict[str, Any] | None:
        options = acm.describe_certificate(CertificateArn=arn)["Certificate"].get(
            "DomainValidationOptions", []
        )
        return options[0].get("ResourceRecord") if options else None

    rr = _wait(f"{node.name}: DNS validation record", record)
    return {
        "id": arn,
        "arn": arn,
        "domainValidationOptions.0.resourceRecordName": rr["Name"],
        "domainValidationOptions.0.resourceRecordValue": rr["Value"],
    }


@creates("aws:acm/certificateValidation:CertificateValidation", {"certificateArn", "validationRecordFqdns"})
def certificate_validation(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    acm = ctx.client("acm", ctx.region(node))
    arn = i["certificateArn"]

    def issued() -> bool:
        status = acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"]
        if status in ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED"):
            raise ApplyError(f"{node.name}: certificate {status}")
        return status == "ISSUED"

    _wait(f"{node.name}: certificate issue", issued)
    return {"id": arn, "certificateArn": arn}


@creates(
    "aws:wafv2/webAcl:WebAcl",
    {"name", "description", "scope", "defaultAction", "rules", "visibilityConfig", "tags"},
)
def web_acl(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    args: dict[str, Any] = {
        "Name": i["name"],
        "Scope": i["scope"],
        "DefaultAction": pascal(i["defaultAction"]),
        "Rules": pascal(i.get("rules", [])),
        "VisibilityConfig": pascal(i["visibilityConfig"]),
    }
    if i.get("description"):
        args["Description"] = i["description"]
    if i.get("tags"):
        args["Tags"] = aws_tags(i["tags"])
    # CLOUDFRONT-scope ACLs exist only in us-east-1.
    region = "us-east-1" if i["scope"] == "CLOUDFRONT" else ctx.region(node)
    summary = ctx.client("wafv2", region).create_web_acl(**args)["Summary"]
    return {"id": summary["Id"], "arn": summary["ARN"]}


@creates("aws:sns/topic:Topic", {"name", "tags"})
def topic(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    args: dict[str, Any] = {"Name": i["name"]}
    if i.get("tags"):
        args["Tags"] = aws_tags(i["tags"])
    arn = ctx.client("sns", ctx.region(node)).create_topic(**args)["TopicArn"]
    return {"id": arn, "arn": arn}


@creates("aws:sns/topicSubscription:TopicSubscription", {"topic", "protocol", "endpoint"})
def topic_subscription(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    sub = ctx.client("sns", ctx.region(node)).subscribe(
        TopicArn=i["topic"], Protocol=i["protocol"], Endpoint=i["endpoint"], ReturnSubscriptionArn=True
    )
    return {"id": sub["SubscriptionArn"], "arn": sub["SubscriptionArn"]}


@creates(
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    {
        "name",
        "alarmDescription",
        "namespace",
        "metricName",
        "dimensions",
        "statistic",
        "extendedStatistic",
        "period",
        "evaluationPeriods",
        "datapointsToAlarm",
        "comparisonOperator",
        "threshold",
        "treatMissingData",
        "alarmActions",
        "okActions",
        "tags",
    },
)
def metric_alarm(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    args: dict[str, Any] = {
        "AlarmName": i["name"],
        "AlarmDescription": i.get("alarmDescription", ""),
        "Namespace": i["namespace"],
        "MetricName": i["metricName"],
        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(i.get("dimensions", {}).items())],
        "Period": i["period"],
        "EvaluationPeriods": i["evaluationPeriods"],
        "ComparisonOperator": i["comparisonOperator"],
        "Threshold": float(i["threshold"]),
        "TreatMissingData": i.get("treatMissingData", "missing"),
        "AlarmActions": i.get("alarmActions", []),
        "OKActions": i.get("okActions", []),
        "Tags": aws_tags(i.get("tags")),
    }
    if i.get("statistic"):
        args["Statistic"] = i["statistic"]
    if i.get("extendedStatistic"):
        args["ExtendedStatistic"] = i["extendedStatistic"]
    if i.get("datapointsToAlarm"):
        args["DatapointsToAlarm"] = i["datapointsToAlarm"]
    cw = ctx.client("cloudwatch", ctx.region(node))
    cw.put_metric_alarm(**args)
    alarms = cw.describe_alarms(AlarmNames=[i["name"]])["MetricAlarms"]
    arn = (
        alarms[0]["AlarmArn"]
        if alarms
        else f"arn:aws:cloudwatch:{ctx.region(node)}:000000000000:alarm:{i['name']}"
    )
    return {"id": i["name"], "arn": arn}
