"""The policy pack entry point: ``pulumi preview --policy-pack infra/policy_pack`` (needs the CLI).

Never construct ``PolicyPack`` anywhere else: it starts a gRPC server and blocks.
"""

import sys
from pathlib import Path

# Run as a directory by the Pulumi CLI: put the repository root on the path for ``infra.*``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy_pack.rules import POLICIES

PolicyPack(name="cdnlab-security", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
