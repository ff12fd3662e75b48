"""S3 buckets and their settings."""

from __future__ import annotations

from typing import Any

from infra.applier.base import ApplyError, Attrs, Context, aws_tags, creates
from infra.graph import Node


def _s3(ctx: Context, node: Node) -> Any:
    return ctx.client("s3", ctx.region(node))


@creates("aws:s3/bucket:Bucket", {"bucket", "tags"})
def bucket(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    region = ctx.region(node)
    name = i["bucket"]
    args: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3 = _s3(ctx, node)
    s3.create_bucket(**args)
    if i.get("tags"):
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": aws_tags(i["tags"])})
    return {
        "id": name,
        "arn": f"arn:aws:s3:::{name}",
        "bucketDomainName": f"{name}.s3.amazonaws.com",
        "bucketRegionalDomainName": f"{name}.s3.{region}.amazonaws.com",
    }


@creates("aws:s3/bucketOwnershipControls:BucketOwnershipControls", {"bucket", "rule"})
def ownership(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    _s3(ctx, node).put_bucket_ownership_controls(
        Bucket=i["bucket"], OwnershipControls={"Rules": [{"ObjectOwnership": i["rule"]["objectOwnership"]}]}
    )
    return {"id": i["bucket"]}


@creates(
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    {"bucket", "blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"},
)
def public_access_block(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    _s3(ctx, node).put_public_access_block(
        Bucket=i["bucket"],
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": bool(i.get("blockPublicAcls")),
            "IgnorePublicAcls": bool(i.get("ignorePublicAcls")),
            "BlockPublicPolicy": bool(i.get("blockPublicPolicy")),
            "RestrictPublicBuckets": bool(i.get("restrictPublicBuckets")),
        },
    )
    return {"id": i["bucket"]}


@creates(
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    {"bucket", "rules"},
)
def encryption(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    rules = []
    for r in i["rules"]:
        default = r["applyServerSideEncryptionByDefault"]
        rule: dict[str, Any] = {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": default["sseAlgorithm"]}
        }
        if default.get("kmsMasterKeyId"):
            rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] = default["kmsMasterKeyId"]
        if "bucketKeyEnabled" in r:
            rule["BucketKeyEnabled"] = bool(r["bucketKeyEnabled"])
        rules.append(rule)
    _s3(ctx, node).put_bucket_encryption(
        Bucket=i["bucket"], ServerSideEncryptionConfiguration={"Rules": rules}
    )
    return {"id": i["bucket"]}


@creates("aws:s3/bucketVersioning:BucketVersioning", {"bucket", "versioningConfiguration"})
def versioning(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    _s3(ctx, node).put_bucket_versioning(
        Bucket=i["bucket"], VersioningConfiguration={"Status": i["versioningConfiguration"]["status"]}
    )
    return {"id": i["bucket"]}


def _filter(f: dict[str, Any] | None) -> dict[str, Any]:
    f = f or {}
    return {"Prefix": f.get("prefix", "")}


@creates("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", {"bucket", "rules"})
def lifecycle(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    rules = []
    for r in i["rules"]:
        rule: dict[str, Any] = {"ID": r["id"], "Status": r["status"], "Filter": _filter(r.get("filter"))}
        if "expiration" in r:
            rule["Expiration"] = {"Days": r["expiration"]["days"]}
        if "noncurrentVersionExpiration" in r:
            rule["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": r["noncurrentVersionExpiration"]["noncurrentDays"]
            }
        if "abortIncompleteMultipartUpload" in r:
            rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": r["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
            }
        unknown = set(r) - {"id", "status", "filter", "expiration", "noncurrentVersionExpiration"}
        unknown -= {"abortIncompleteMultipartUpload"}
        if unknown:
            raise ApplyError(
                f"{node.type} {node.name}: lifecycle rule field {sorted(unknown)[0]!r} not supported"
            )
        rules.append(rule)
    _s3(ctx, node).put_bucket_lifecycle_configuration(
        Bucket=i["bucket"], LifecycleConfiguration={"Rules": rules}
    )
    return {"id": i["bucket"]}


@creates("aws:s3/bucketLogging:BucketLogging", {"bucket", "targetBucket", "targetPrefix"})
def logging(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    _s3(ctx, node).put_bucket_logging(
        Bucket=i["bucket"],
        BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": i["targetBucket"], "TargetPrefix": i.get("targetPrefix", "")}
        },
    )
    return {"id": i["bucket"]}


@creates("aws:s3/bucketPolicy:BucketPolicy", {"bucket", "policy"})
def policy(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    _s3(ctx, node).put_bucket_policy(Bucket=i["bucket"], Policy=i["policy"])
    return {"id": i["bucket"]}


@creates("aws:s3/bucketReplicationConfig:BucketReplicationConfig", {"bucket", "role", "rules"})
def replication(ctx: Context, node: Node, i: dict[str, Any]) -> Attrs:
    rules = []
    for r in i["rules"]:
        dest = r["destination"]
        rule: dict[str, Any] = {
            "ID": r["id"],
            "Status": r["status"],
            "Priority": r.get("priority", 0),
            "Filter": _filter(r.get("filter")),
            "Destination": {"Bucket": dest["bucket"], "StorageClass": dest.get("storageClass", "STANDARD")},
            "DeleteMarkerReplication": {
                "Status": r.get("deleteMarkerReplication", {}).get("status", "Disabled")
            },
        }
        rules.append(rule)
    _s3(ctx, node).put_bucket_replication(
        Bucket=i["bucket"], ReplicationConfiguration={"Role": i["role"], "Rules": rules}
    )
    return {"id": i["bucket"]}
