"""Route 53: the zone, health checks and records."""

from __future__ import annotations

from typing import Any

from infra.applier.base import ApplyError, Attrs, Context, aws_tags, caller_reference, creates
from infra.graph import Node


def _r53(ctx: Context) -> Any:
    return ctx.client("route53", "us-east-1")


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


@creates("aws:route53/zone:Zone", {"name", "comment", "tags"})
def zone(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    r53 = _r53(ctx)
    created = r53.create_hosted_zone(
        Name=_fqdn(i["name"]),
        CallerReference=caller_reference(node),
        HostedZoneConfig={"Comment": i.get("comment", ""), "PrivateZone": False},
    )
    zone_id = created["HostedZone"]["Id"].rsplit("/", 1)[-1]
    if i.get("tags"):
        r53.change_tags_for_resource(
            ResourceType="hostedzone", ResourceId=zone_id, AddTags=aws_tags(i["tags"])
        )
    servers = created.get("DelegationSet", {}).get("NameServers", [])
    attrs: Attrs = {"id": zone_id, "zoneId": zone_id, "arn": f"arn:aws:route53:::hostedzone/{zone_id}"}
    for n in range(4):
        attrs[f"nameServers.{n}"] = servers[n] if n < len(servers) else ""
    return attrs


@creates(
    "aws:route53/healthCheck:HealthCheck",
    {
        "type",
        "ipAddress",
        "port",
        "resourcePath",
        "fqdn",
        "enableSni",
        "requestInterval",
        "failureThreshold",
        "childHealthchecks",
        "childHealthThreshold",
        "tags",
    },
)
def health_check(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    config: dict[str, Any] = {"Type": i["type"]}
    if i["type"] == "CALCULATED":
        config |= {"ChildHealthChecks": i["childHealthchecks"], "HealthThreshold": i["childHealthThreshold"]}
    else:
        for key, api in (
            ("ipAddress", "IPAddress"),
            ("port", "Port"),
            ("resourcePath", "ResourcePath"),
            ("fqdn", "FullyQualifiedDomainName"),
            ("enableSni", "EnableSNI"),
            ("requestInterval", "RequestInterval"),
            ("failureThreshold", "FailureThreshold"),
        ):
            if key in i:
                config[api] = i[key]
    r53 = _r53(ctx)
    created = r53.create_health_check(CallerReference=caller_reference(node), HealthCheckConfig=config)
    check_id = created["HealthCheck"]["Id"]
    if i.get("tags"):
        r53.change_tags_for_resource(
            ResourceType="healthcheck", ResourceId=check_id, AddTags=aws_tags(i["tags"])
        )
    return {"id": check_id, "arn": f"arn:aws:route53:::healthcheck/{check_id}"}


def _geolocation(g: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, api in (
        ("continent", "ContinentCode"),
        ("country", "CountryCode"),
        ("subdivision", "SubdivisionCode"),
    ):
        if g.get(key):
            out[api] = g[key]
    return out


@creates(
    "aws:route53/record:Record",
    {
        "zoneId",
        "name",
        "type",
        "ttl",
        "records",
        "setIdentifier",
        "geolocationRoutingPolicies",
        "healthCheckId",
        "aliases",
        "allowOverwrite",
    },
)
def record(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    rrset: dict[str, Any] = {"Name": _fqdn(i["name"]), "Type": i["type"]}
    if i.get("aliases"):
        a = i["aliases"][0]
        rrset["AliasTarget"] = {
            "HostedZoneId": a["zoneId"],
            "DNSName": a["name"],
            "EvaluateTargetHealth": bool(a.get("evaluateTargetHealth")),
        }
    else:
        rrset["TTL"] = i["ttl"]
        rrset["ResourceRecords"] = [{"Value": v} for v in i["records"]]
    if i.get("setIdentifier"):
        rrset["SetIdentifier"] = i["setIdentifier"]
    policies = i.get("geolocationRoutingPolicies") or []
    if len(policies) > 1:
        raise ApplyError(f"{node.type} {node.name}: one geolocation per record")
    if policies:
        rrset["GeoLocation"] = _geolocation(policies[0])
    if i.get("healthCheckId"):
        rrset["HealthCheckId"] = i["healthCheckId"]
    _r53(ctx).change_resource_record_sets(
        HostedZoneId=i["zoneId"],
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]},
    )
    fqdn = i["name"].rstrip(".")
    return {"id": f"{i['zoneId']}_{fqdn}_{i['type']}", "fqdn": fqdn}
