"""The applier's registry: one creator per resource type, each declaring the inputs it understands.

A type without a creator, or an input a creator does not know, stops the run with an error naming
it: a resource or a setting is never dropped on the way to the emulator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from infra.graph import TOKEN, Graph, Node

Attrs = dict[str, Any]
Creator = Callable[["Context", Node, dict[str, Any]], Attrs]


class ApplyError(RuntimeError):
    """The run cannot go on; the message names the resource and the reason."""


@dataclass(frozen=True)
class Handler:
    type: str
    inputs: frozenset[str]
    create: Creator


REGISTRY: dict[str, Handler] = {}


def creates(type_: str, inputs: Iterable[str]) -> Callable[[Creator], Creator]:
    def register(fn: Creator) -> Creator:
        REGISTRY[type_] = Handler(type_, frozenset(inputs), fn)
        return fn

    return register


@dataclass
class Context:
    graph: Graph
    endpoint: str
    resolved: dict[tuple[str, str], Attrs] = field(default_factory=dict)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            creds = {}
            # An emulator takes any credentials; never look further for real ones.
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
            self._clients[key] = boto3.client(
                service,
                region_name=region,
                endpoint_url=self.endpoint,
                config=Config(
                    retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}
                ),
                **creds,
            )
        return self._clients[key]

    def region(self, node: Node) -> str:
        return self.graph.region_of(node)

    def substitute(self, value: Any, node: Node) -> Any:
        """VALUE with every reference token replaced by the created resource's real value."""
        if isinstance(value, str):
            return TOKEN.sub(lambda m: str(self._lookup(m, node)), value)
        if isinstance(value, dict):
            return {k: self.substitute(v, node) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, node) for v in value]
        return value

    def _lookup(self, m: re.Match[str], node: Node) -> Any:
        type_, name, attr = m.groups()
        attrs = self.resolved.get((type_, name))
        if attrs is None:
            raise ApplyError(f"{node.type} {node.name}: needs {type_} {name}, which was not created first")
        if attr not in attrs:
            raise ApplyError(f"{node.type} {node.name}: {type_} {name} has no value for {attr!r}")
        return attrs[attr]


def items(values: list[Any] | None) -> dict[str, Any]:
    """CloudFront's list shape."""
    values = list(values or [])
    return {"Quantity": len(values), "Items": values} if values else {"Quantity": 0}


def aws_tags(tags: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())]


def caller_reference(node: Node) -> str:
    # Deterministic, so a retried call is recognised as the same request by AWS.
    return re.sub(r"[^A-Za-z0-9-]", "-", f"cdnlab-{node.name}")[:128]
