"""cdnlab's cloud tier as a Pulumi program: S3 origins, CloudFront with Origin Shield, Route 53,
WAF and alarms. ``__main__.py`` is what ``pulumi up`` runs; ``infra.apply`` creates the same
resources on an AWS emulator without the Pulumi CLI; ``infra/policy_pack`` holds the CrossGuard rules.
"""
