"""S3 origins: a primary and a replica bucket in two regions, plus the log bucket.

Every bucket is private (all four public-access blocks, ACLs disabled on the origins) and encrypted;
the origins are versioned, replicate primary -> replica, and are readable only by this CDN's
CloudFront distribution through Origin Access Control (see ``grant_cloudfront``).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

SSE_ALGORITHM = "AES256"


def _deny_insecure_transport(bucket_arn: str) -> dict:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


class PrivateBucket(pulumi.ComponentResource):
    """One bucket with the settings every cdnlab bucket shares."""

    def __init__(
        self,
        name: str,
        bucket_name: str,
        *,
        provider: aws.Provider,
        versioned: bool,
        acls_for_log_delivery: bool = False,
        lifecycle_rules: list[dict],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cdnlab:infra:PrivateBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        self.bucket = aws.s3.Bucket(name, bucket=bucket_name, tags=tags, opts=child)
        # CloudFront standard logs are written with ACLs, so only the log bucket keeps them enabled.
        ownership = "BucketOwnerPreferred" if acls_for_log_delivery else "BucketOwnerEnforced"
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=self.bucket.id, rule={"object_ownership": ownership}, opts=child
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": SSE_ALGORITHM}}],
            opts=child,
        )
        self.versioning: aws.s3.BucketVersioning | None = None
        if versioned:
            self.versioning = aws.s3.BucketVersioning(
                f"{name}-versioning",
                bucket=self.bucket.id,
                versioning_configuration={"status": "Enabled"},
                opts=child,
            )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=lifecycle_rules,
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=[r for r in [self.versioning] if r]
            ),
        )
        self.register_outputs({"bucket": self.bucket.bucket, "arn": self.bucket.arn})


class Origins(pulumi.ComponentResource):
    """Primary and replica origin buckets, replication between them, and the log bucket."""

    def __init__(
        self,
        name: str,
        *,
        prefix: str,
        primary_region: str,
        replica_region: str,
        primary: aws.Provider,
        replica: aws.Provider,
        noncurrent_version_days: int,
        log_retention_days: int,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cdnlab:infra:Origins", name, None, opts)
        self._label = name
        origin_rules = [
            {
                "id": "expire-noncurrent-versions",
                "status": "Enabled",
                "filter": {},
                "noncurrent_version_expiration": {"noncurrent_days": noncurrent_version_days},
            },
            {
                "id": "abort-incomplete-uploads",
                "status": "Enabled",
                "filter": {},
                "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
            },
        ]
        log_rules = [
            {
                "id": "expire-logs",
                "status": "Enabled",
                "filter": {},
                "expiration": {"days": log_retention_days},
            }
        ]
        mine = pulumi.ResourceOptions(parent=self)
        self.primary = PrivateBucket(
            f"{name}-primary",
            f"{prefix}-origin-{primary_region}",
            provider=primary,
            versioned=True,
            lifecycle_rules=origin_rules,
            tags={**tags, "role": "origin-primary"},
            opts=mine,
        )
        self.replica = PrivateBucket(
            f"{name}-replica",
            f"{prefix}-origin-{replica_region}",
            provider=replica,
            versioned=True,
            lifecycle_rules=origin_rules,
            tags={**tags, "role": "origin-replica"},
            opts=mine,
        )
        self.logs = PrivateBucket(
            f"{name}-logs",
            f"{prefix}-logs-{primary_region}",
            provider=primary,
            versioned=False,
            acls_for_log_delivery=True,
            lifecycle_rules=log_rules,
            tags={**tags, "role": "logs"},
            opts=mine,
        )
        on_primary = pulumi.ResourceOptions(parent=self, provider=primary)
        # S3 server access logs must land in a bucket of the same region: the primary's go to the
        # log bucket; the replica only serves when the primary fails, and CloudFront logs cover it.
        self.access_logging = aws.s3.BucketLogging(
            f"{name}-primary-access-logs",
            bucket=self.primary.bucket.id,
            target_bucket=self.logs.bucket.id,
            target_prefix="s3/primary/",
            opts=on_primary,
        )
        self.logs_policy = aws.s3.BucketPolicy(
            f"{name}-logs-policy",
            bucket=self.logs.bucket.id,
            policy=pulumi.Output.all(self.logs.bucket.arn, self.primary.bucket.arn).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "S3ServerAccessLogs",
                                "Effect": "Allow",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Resource": f"{a[0]}/s3/*",
                                "Condition": {"ArnLike": {"aws:SourceArn": a[1]}},
                            },
                            _deny_insecure_transport(a[0]),
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(
                parent=self, provider=primary, depends_on=[self.logs.public_access_block]
            ),
        )
        self._replication(name, primary, tags)
        self.register_outputs(
            {
                "primary_bucket": self.primary.bucket.bucket,
                "replica_bucket": self.replica.bucket.bucket,
                "log_bucket": self.logs.bucket.bucket,
            }
        )

    def _replication(self, name: str, primary: aws.Provider, tags: dict[str, str]) -> None:
        src, dst = self.primary.bucket.arn, self.replica.bucket.arn
        self.replication_role = aws.iam.Role(
            f"{name}-replication-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.replication_policy = aws.iam.RolePolicy(
            f"{name}-replication-policy",
            role=self.replication_role.id,
            policy=pulumi.Output.all(src, dst).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                                "Resource": a[0],
                            },
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "s3:GetObjectVersionForReplication",
                                    "s3:GetObjectVersionAcl",
                                    "s3:GetObjectVersionTagging",
                                ],
                                "Resource": f"{a[0]}/*",
                            },
                            {
                                "Effect": "Allow",
                                "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                                "Resource": f"{a[1]}/*",
                            },
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        versionings = [v for v in (self.primary.versioning, self.replica.versioning) if v]
        self.replication = aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=self.primary.bucket.id,
            role=self.replication_role.arn,
            rules=[
                {
                    "id": "replicate-everything",
                    "status": "Enabled",
                    "priority": 1,
                    "filter": {},
                    "delete_marker_replication": {"status": "Enabled"},
                    "destination": {"bucket": dst, "storage_class": "STANDARD"},
                }
            ],
            opts=pulumi.ResourceOptions(
                parent=self, provider=primary, depends_on=[*versionings, self.replication_policy]
            ),
        )

    def grant_cloudfront(
        self, distribution_arn: pulumi.Input[str], primary: aws.Provider, replica: aws.Provider
    ) -> None:
        """Bucket policies letting only this distribution (through OAC) read the origins."""
        for label, bucket, provider in (
            ("primary", self.primary, primary),
            ("replica", self.replica, replica),
        ):
            policy = pulumi.Output.all(bucket.bucket.arn, distribution_arn).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "CloudFrontOriginAccessControl",
                                "Effect": "Allow",
                                "Principal": {"Service": "cloudfront.amazonaws.com"},
                                "Action": "s3:GetObject",
                                "Resource": f"{a[0]}/*",
                                "Condition": {"StringEquals": {"AWS:SourceArn": a[1]}},
                            },
                            _deny_insecure_transport(a[0]),
                        ],
                    }
                )
            )
            aws.s3.BucketPolicy(
                f"{self._label}-{label}-policy",
                bucket=bucket.bucket.id,
                policy=policy,
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[bucket.public_access_block]
                ),
            )
