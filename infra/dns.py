"""Route 53: the zone, geolocation records per continent plus a default, each guarded by a health
check (seed 003 §4.1: TTL 60), the CDN name aliased to CloudFront, and one record per appliance.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.inventory import Inventory
from infra.settings import GeoEndpoints, Settings

GEO_TTL = 60
APPLIANCE_TTL = 60
DEFAULT_SET_ID = "default"


def geolocation(code: str) -> dict:
    # Route 53's default location is the country "*": it answers whatever no other record matches.
    return {"country": "*"} if code == DEFAULT_SET_ID else {"continent": code}


class Dns(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        inventory: Inventory,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cdnlab:infra:Dns", name, None, opts)
        self._label = name
        self._settings = settings
        child = pulumi.ResourceOptions(parent=self)
        self.zone = aws.route53.Zone(
            f"{name}-zone", name=settings.domain, comment="cdnlab CDN zone", tags=tags, opts=child
        )
        self.health_checks: dict[str, aws.route53.HealthCheck] = {}
        self.geo_records: dict[str, aws.route53.Record] = {}
        for code, endpoints in settings.geo.items():
            check = self._health_check(code.lower(), endpoints, tags)
            self.health_checks[code] = check
            self.geo_records[code] = aws.route53.Record(
                f"{name}-geo-{code.lower()}",
                zone_id=self.zone.zone_id,
                name=settings.geo_fqdn,
                type="A",
                ttl=GEO_TTL,
                records=endpoints.ips,
                set_identifier=code,
                geolocation_routing_policies=[geolocation(code)],
                health_check_id=check.id,
                opts=child,
            )
        self.appliance_records: list[aws.route53.Record] = []
        for site in inventory.sites:
            for appliance in site.appliances:
                fqdn = f"{appliance.name}.{site.name}.oca.{settings.domain}"
                for rtype, value in (("A", appliance.ipv4), ("AAAA", appliance.ipv6)):
                    if value is None:
                        continue
                    self.appliance_records.append(
                        aws.route53.Record(
                            f"{name}-oca-{site.name}-{appliance.name}-{rtype.lower()}",
                            zone_id=self.zone.zone_id,
                            name=fqdn,
                            type=rtype,
                            ttl=APPLIANCE_TTL,
                            records=[value],
                            opts=child,
                        )
                    )
        self.register_outputs({"zone_id": self.zone.zone_id, "name_servers": self.zone.name_servers})

    def _health_check(
        self, label: str, endpoints: GeoEndpoints, tags: dict[str, str]
    ) -> aws.route53.HealthCheck:
        """One check per address; a record with several addresses gets a calculated parent that stays
        healthy while any address answers (Route 53 takes one health check per record)."""
        s = self._settings
        child = pulumi.ResourceOptions(parent=self)
        probes = [
            aws.route53.HealthCheck(
                f"{self._label}-health-{label}-{i}",
                type=s.health_type,
                ip_address=ip,
                port=s.health_port,
                resource_path=s.health_path,
                fqdn=s.geo_fqdn,
                enable_sni=s.health_type == "HTTPS",
                request_interval=30,
                failure_threshold=3,
                tags={**tags, "Name": f"{s.geo_fqdn} {label} {ip}"},
                opts=child,
            )
            for i, ip in enumerate(endpoints.ips)
        ]
        if len(probes) == 1:
            return probes[0]
        return aws.route53.HealthCheck(
            f"{self._label}-health-{label}",
            type="CALCULATED",
            child_healthchecks=[p.id for p in probes],
            child_health_threshold=1,
            tags={**tags, "Name": f"{s.geo_fqdn} {label}"},
            opts=child,
        )

    def alias_cdn(self, distribution: aws.cloudfront.Distribution) -> list[aws.route53.Record]:
        """CDN_NAME.DOMAIN -> the distribution, A and AAAA (CloudFront serves IPv6)."""
        self.cdn_records = [
            aws.route53.Record(
                f"{self._label}-cdn-{rtype.lower()}",
                zone_id=self.zone.zone_id,
                name=self._settings.cdn_fqdn,
                type=rtype,
                aliases=[
                    {
                        "name": distribution.domain_name,
                        "zone_id": distribution.hosted_zone_id,
                        "evaluate_target_health": False,
                    }
                ],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for rtype in ("A", "AAAA")
        ]
        return self.cdn_records
