"""Run the Pulumi program under the mock runtime and capture its resource graph.

No Pulumi CLI or engine is involved: ``pulumi.runtime.set_mocks`` stands in for the engine, and a
recording monitor keeps, for every resource, its type, name, inputs (camelCase, as providers and
CrossGuard see them), parent, provider and dependencies. Values the cloud assigns (ids, ARNs,
domain names) come back as reference tokens, ``{{ref|TYPE|NAME|ATTR}}``, which ``infra.apply``
replaces with the real values once it has created the resource they name. The same mocks serve
the unit tests, which assert on the recorded inputs.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

TOKEN = re.compile(r"\{\{ref\|([^|{}]+)\|([^|{}]+)\|([^|{}]+)\}\}")
PROVIDER_PREFIX = "pulumi:providers:"
# CloudFront's fixed hosted zone id for alias records (the same in every account).
CLOUDFRONT_ZONE_ID = "Z2FDTNDATAQYW2"
# How the Pulumi wire format marks a secret value ({SIG_KEY: SECRET_SIG, "value": ...}).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def ref(type_: str, name: str, attr: str) -> str:
    return f"{{{{ref|{type_}|{name}|{attr}}}}}"


@dataclass
class Node:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    custom: bool
    parent: str = ""
    provider: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_provider(self) -> bool:
        return self.type.startswith(PROVIDER_PREFIX)

    @property
    def provider_urn(self) -> str:
        # A provider reference is "URN::ID".
        return self.provider.rsplit("::", 1)[0] if self.provider else ""


@dataclass
class Graph:
    nodes: list[Node]
    outputs: dict[str, Any]
    config: dict[str, str]

    def by_urn(self) -> dict[str, Node]:
        return {n.urn: n for n in self.nodes}

    def of_type(self, type_: str) -> list[Node]:
        return [n for n in self.nodes if n.type == type_]

    def named(self, type_: str, name: str) -> Node:
        for n in self.nodes:
            if n.type == type_ and n.name == name:
                return n
        raise KeyError(f"{type_} {name}")

    def region_of(self, node: Node) -> str:
        """The region a resource is created in: its explicit provider's, else the stack's."""
        if node.provider_urn:
            provider = self.by_urn().get(node.provider_urn)
            if provider is not None and provider.inputs.get("region"):
                return str(provider.inputs["region"])
        return self.config.get("aws:region", "us-east-1")

    def topological(self) -> list[Node]:
        """Custom resources, each after everything it depends on (registration order breaks ties)."""
        index = self.by_urn()
        done: set[str] = set()
        order: list[Node] = []

        def visit(node: Node, path: tuple[str, ...]) -> None:
            if node.urn in done:
                return
            if node.urn in path:
                raise ValueError(f"dependency cycle through {node.urn}")
            for dep in node.dependencies:
                if dep in index:
                    visit(index[dep], (*path, node.urn))
            done.add(node.urn)
            order.append(node)

        for n in self.nodes:
            visit(n, ())
        return [n for n in order if n.custom]

    def to_json(self) -> str:
        return json.dumps(
            {"config": self.config, "outputs": self.outputs, "nodes": [n.__dict__ for n in self.nodes]},
            indent=2,
            default=str,
        )


def _plain(value: Any) -> Any:
    """Mock inputs with floats that are whole numbers made ints (the engine sends numbers as floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping) and value.get(_SIG_KEY) == _SECRET_SIG:
        return _plain(value["value"])  # a secret, as the mock monitor hands it over
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class CdnMocks(pulumi.runtime.Mocks):
    """Mocks that answer like AWS would, with reference tokens for what AWS would assign."""

    def __init__(self, config: Mapping[str, str]) -> None:
        self.config = dict(config)
        self.providers: dict[str, dict[str, Any]] = {}

    def _region(self, provider_ref: str | None) -> str:
        # A provider reference is "URN::ID" and a URN ends in "::NAME".
        name = (provider_ref or "").rsplit("::", 1)[0].rsplit("::", 1)[-1]
        region = self.providers.get(name, {}).get("region")
        return str(region or self.config.get("aws:region", "us-east-1"))

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        t, name, inputs = args.typ, args.name, dict(args.inputs)

        def r(attr: str) -> str:
            return ref(t, name, attr)

        state: dict[str, Any] = {**inputs, "arn": r("arn")}
        rid: str = r("id")
        if t.startswith(PROVIDER_PREFIX):
            self.providers[name] = inputs
            state = dict(inputs)
        elif t == "aws:s3/bucket:Bucket":
            b = inputs["bucket"]
            region = self._region(args.provider)
            rid = b
            state |= {
                "arn": f"arn:aws:s3:::{b}",
                "bucketDomainName": f"{b}.s3.amazonaws.com",
                "bucketRegionalDomainName": f"{b}.s3.{region}.amazonaws.com",
                "region": region,
            }
        elif t == "aws:cloudfront/distribution:Distribution":
            state |= {"domainName": r("domainName"), "hostedZoneId": CLOUDFRONT_ZONE_ID, "etag": r("etag")}
        elif t == "aws:route53/zone:Zone":
            state |= {"zoneId": r("zoneId"), "nameServers": [r(f"nameServers.{i}") for i in range(4)]}
        elif t == "aws:route53/record:Record":
            state |= {"fqdn": str(inputs.get("name", "")).rstrip(".")}
        elif t == "aws:acm/certificate:Certificate":
            state |= {
                "domainValidationOptions": [
                    {
                        "domainName": inputs.get("domainName"),
                        "resourceRecordName": r("domainValidationOptions.0.resourceRecordName"),
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": r("domainValidationOptions.0.resourceRecordValue"),
                    }
                ]
            }
        elif t == "aws:acm/certificateValidation:CertificateValidation":
            state |= {"certificateArn": inputs.get("certificateArn")}
        elif t == "aws:iam/role:Role":
            state |= {"name": inputs.get("name") or r("name")}
        # CrossGuard stack policies see "id" among a bridged resource's outputs; keep it there too.
        state["id"] = rid
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, plus a record of each registration's parent, provider and deps."""

    def __init__(self, mocks: CdnMocks) -> None:
        super().__init__(mocks)
        self.nodes: list[Node] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object)
        node = Node(
            urn=response.urn,
            type=request.type,
            name=request.name,
            inputs=_plain(inputs),
            state=_plain(self.resources[response.urn].state),
            custom=bool(request.custom),
            parent=request.parent,
            provider=request.provider,
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
        )
        with self._lock:
            self.nodes.append(node)
        return response


def capture(
    program: Callable[[], Mapping[str, Any]],
    config: Mapping[str, str],
    project: str = "cdnlab",
    stack: str = "lab",
) -> Graph:
    """Run PROGRAM (returns its outputs) under the mocks with CONFIG; return the recorded graph."""
    # A fresh loop and fresh mocks per run: state left by a previous run breaks the next one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_all_config(dict(config))
    mocks = CdnMocks(config)
    monitor = _RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output:
        declared = program()
        return pulumi.Output.all(**dict(declared)).apply(outputs.update)

    run()
    return Graph(nodes=list(monitor.nodes), outputs=_plain(outputs), config=dict(config))
