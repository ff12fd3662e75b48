"""CloudFront ``CreateInvalidation`` / ``GetInvalidation`` through boto3. boto3 honours
``AWS_ENDPOINT_URL``, so moto, LocalStack or real AWS are chosen by the environment. Calls block:
the invalidation runner calls them in a thread."""

from __future__ import annotations

from typing import Any


class CloudFrontInvalidator:
    def __init__(self, distribution_id: str, region: str = "us-east-1") -> None:
        self.distribution_id = distribution_id
        self.region = region
        self._client: Any = None

    def _cf(self) -> Any:
        if self._client is None:
            import boto3  # optional dependency (the infra extra); only needed with a distribution

            self._client = boto3.client("cloudfront", region_name=self.region)
        return self._client

    def create(self, paths: list[str], caller_reference: str) -> tuple[str, str]:
        """(invalidation id, status). The caller reference makes a repeated call harmless:
        CloudFront answers the same invalidation for the same reference and paths."""
        resp = self._cf().create_invalidation(
            DistributionId=self.distribution_id,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": paths},
                "CallerReference": caller_reference,
            },
        )
        inv = resp["Invalidation"]
        return inv["Id"], inv["Status"]

    def status(self, invalidation_id: str) -> str:
        resp = self._cf().get_invalidation(DistributionId=self.distribution_id, Id=invalidation_id)
        return str(resp["Invalidation"]["Status"])
