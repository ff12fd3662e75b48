"""CloudWatch alarms on the distribution at the seed's thresholds (seed 003 §5.1), to one SNS topic.

CloudFront publishes its metrics in us-east-1 with the dimension Region=Global, so the alarms and
the topic they notify live there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AlarmSpec:
    key: str
    metric: str
    comparison: str
    threshold: float
    severity: str
    description: str
    statistic: str | None = "Average"
    extended_statistic: str | None = None
    period: int = 300
    evaluation_periods: int = 2
    datapoints_to_alarm: int = 2


ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec(
        "5xx-error-rate",
        "5xxErrorRate",
        "GreaterThanThreshold",
        0.1,
        "critical",
        "5xx responses above 0.1% of requests",
        period=60,
        evaluation_periods=5,
        datapoints_to_alarm=3,
    ),
    AlarmSpec("4xx-error-rate", "4xxErrorRate", "GreaterThanThreshold", 1.0, "warning", "4xx above 1%"),
    AlarmSpec(
        "cache-hit-rate", "CacheHitRate", "LessThanThreshold", 80.0, "warning", "cache hit rate below 80%"
    ),
    AlarmSpec(
        "origin-latency",
        "OriginLatency",
        "GreaterThanThreshold",
        500.0,
        "warning",
        "origin latency p95 above 500 ms",
        statistic=None,
        extended_statistic="p95",
    ),
)


class Monitoring(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        prefix: str,
        distribution_id: pulumi.Input[str],
        alarm_email: str | None,
        us_east_1: aws.Provider,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cdnlab:infra:Monitoring", name, None, opts)
        here = pulumi.ResourceOptions(parent=self, provider=us_east_1)
        self.topic = aws.sns.Topic(f"{name}-alarms", name=f"{prefix}-cdn-alarms", tags=tags, opts=here)
        if alarm_email:
            aws.sns.TopicSubscription(
                f"{name}-alarms-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=alarm_email,
                opts=here,
            )
        self.alarms = {
            spec.key: aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                name=f"{prefix}-cdn-{spec.key}",
                alarm_description=f"[{spec.severity}] {spec.description}",
                namespace="AWS/CloudFront",
                metric_name=spec.metric,
                dimensions={"DistributionId": distribution_id, "Region": "Global"},
                statistic=spec.statistic,
                extended_statistic=spec.extended_statistic,
                period=spec.period,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.datapoints_to_alarm,
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                # No traffic is not an outage; the health checks cover a silent CDN.
                treat_missing_data="notBreaching",
                alarm_actions=[self.topic.arn],
                ok_actions=[self.topic.arn],
                tags={**tags, "severity": spec.severity},
                opts=here,
            )
            for spec in ALARMS
        }
        self.register_outputs({"topic_arn": self.topic.arn})
