"""Run the CrossGuard rules on a graph captured under the mocks, without the Pulumi engine.

The mocks' state (inputs plus what AWS would assign, as reference tokens) stands in for the
outputs CrossGuard sees, so ids and ARNs wired between resources still match up.
"""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions

from infra.graph import Graph
from infra.policy_pack.rules import violations


def policy_resources(graph: Graph) -> list[PolicyResource]:
    index = graph.by_urn()
    resources: dict[str, PolicyResource] = {}
    for node in graph.nodes:
        opts = PolicyResourceOptions(
            False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], node.parent or None
        )
        resources[node.urn] = PolicyResource(
            node.type, node.state, node.urn, node.name, opts, None, None, [], {}
        )
    for node in graph.nodes:
        r = resources[node.urn]
        r.parent = resources.get(node.parent)
        r.dependencies = [resources[d] for d in node.dependencies if d in index]
        r.property_dependencies = {
            k: [resources[d] for d in v if d in index] for k, v in node.property_dependencies.items()
        }
    return list(resources.values())


def check(graph: Graph, only: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Rule name -> violations on GRAPH (every list empty when the stack complies)."""
    return violations(policy_resources(graph), only)
