"""Create a captured resource graph on an AWS endpoint (an emulator) through boto3.

Only the types the program uses have creators (``infra/applier/{s3,cloudfront,route53,services}.py``);
every type is checked before anything is created, so an unknown one fails the run up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.applier import cloudfront, route53, s3, services  # noqa: F401  (they fill REGISTRY)
from infra.applier.base import REGISTRY, ApplyError, Context
from infra.graph import Graph, Node

__all__ = ["REGISTRY", "ApplyError", "Created", "apply_graph", "check_supported"]


@dataclass(frozen=True)
class Created:
    type: str
    name: str
    region: str
    id: str


def check_supported(graph: Graph) -> None:
    """Raise naming the first resource type or input the applier cannot create."""
    for node in graph.topological():
        if node.is_provider:
            continue
        handler = REGISTRY.get(node.type)
        if handler is None:
            raise ApplyError(f"{node.type} ({node.name}): no emulator creator for this resource type")
        extra = sorted(set(node.inputs) - handler.inputs)
        if extra:
            raise ApplyError(f"{node.type} ({node.name}): input {extra[0]!r} is not handled by its creator")


def apply_graph(
    graph: Graph, endpoint: str, on_created: Callable[[Created], None] | None = None
) -> tuple[list[Created], dict[str, Any]]:
    """Create every custom resource in dependency order; return them and the resolved stack outputs."""
    check_supported(graph)
    ctx = Context(graph=graph, endpoint=endpoint)
    created: list[Created] = []
    for node in graph.topological():
        if node.is_provider:
            # Providers are configuration, not cloud resources: they only decide the region.
            ctx.resolved[(node.type, node.name)] = {"id": node.name}
            continue
        attrs = _create(ctx, node)
        ctx.resolved[(node.type, node.name)] = attrs
        item = Created(node.type, node.name, ctx.region(node), str(attrs.get("id", "")))
        created.append(item)
        if on_created:
            on_created(item)
    outputs = ctx.substitute(graph.outputs, Node("outputs", "stack", "outputs", {}, {}, False))
    return created, outputs


def _create(ctx: Context, node: Node) -> dict[str, Any]:
    inputs = ctx.substitute(node.inputs, node)
    try:
        return REGISTRY[node.type].create(ctx, node, inputs)
    except (ClientError, BotoCoreError) as exc:
        raise ApplyError(f"{node.type} ({node.name}): {exc}") from exc
