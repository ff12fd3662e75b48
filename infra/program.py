"""The whole cloud tier, wired together; ``__main__.py`` runs it and exports the outputs.

Outputs (read by the lab and the control plane, see docs/infra.md): ``distribution_domain``,
``distribution_id``, ``cdn_fqdn``, ``primary_bucket``, ``replica_bucket``, ``log_bucket``,
``zone_id``, ``name_servers``, ``alarm_topic_arn``, ``web_acl_arn``.
"""

from __future__ import annotations

import pulumi

from cdnlab.policy import Catalog, default_catalog
from infra import inventory as inventory_file
from infra import providers
from infra.distribution import Cdn
from infra.dns import Dns
from infra.monitoring import Monitoring
from infra.origins import Origins
from infra.settings import Settings, from_config, signing_keys

OUTPUT_NAMES = (
    "distribution_domain",
    "distribution_id",
    "cdn_fqdn",
    "primary_bucket",
    "replica_bucket",
    "log_bucket",
    "zone_id",
    "name_servers",
    "alarm_topic_arn",
    "web_acl_arn",
)


def build(settings: Settings | None = None, catalog: Catalog | None = None) -> dict[str, pulumi.Output]:
    """Declare every resource; return the stack outputs (not yet exported)."""
    settings = settings or from_config()
    catalog = catalog or default_catalog()
    tags = {"project": "cdnlab", "stack": pulumi.get_stack()}
    inv_path = settings.inventory_path()
    inventory = inventory_file.load(inv_path) if inv_path else inventory_file.Inventory()

    primary = providers.regional("primary", settings.primary_region)
    replica = providers.regional("replica", settings.replica_region)
    # CloudFront takes certificates, web ACLs and metrics from us-east-1 only.
    us_east_1 = providers.regional("us-east-1", "us-east-1")

    origins = Origins(
        "origins",
        prefix=settings.bucket_prefix,
        primary_region=settings.primary_region,
        replica_region=settings.replica_region,
        primary=primary,
        replica=replica,
        noncurrent_version_days=settings.noncurrent_version_days,
        log_retention_days=settings.log_retention_days,
        tags=tags,
    )
    dns = Dns("dns", settings=settings, inventory=inventory, tags=tags)
    cdn = Cdn(
        "cdn",
        settings=settings,
        catalog=catalog,
        origins=origins,
        zone_id=dns.zone.zone_id,
        signing_keys=signing_keys(),
        us_east_1=us_east_1,
        tags=tags,
    )
    origins.grant_cloudfront(cdn.distribution.arn, primary, replica)
    dns.alias_cdn(cdn.distribution)
    monitoring = Monitoring(
        "monitoring",
        prefix=settings.bucket_prefix,
        distribution_id=cdn.distribution.id,
        alarm_email=settings.alarm_email,
        us_east_1=us_east_1,
        tags=tags,
    )
    return {
        "distribution_domain": cdn.distribution.domain_name,
        "distribution_id": cdn.distribution.id,
        "cdn_fqdn": pulumi.Output.from_input(settings.cdn_fqdn),
        "primary_bucket": origins.primary.bucket.bucket,
        "replica_bucket": origins.replica.bucket.bucket,
        "log_bucket": origins.logs.bucket.bucket,
        "zone_id": dns.zone.zone_id,
        "name_servers": dns.zone.name_servers,
        "alarm_topic_arn": monitoring.topic.arn,
        "web_acl_arn": cdn.web_acl.arn,
    }


def main() -> None:
    for name, value in build().items():
        pulumi.export(name, value)
