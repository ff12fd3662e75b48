"""Shared fixtures for the cloud-tier tests: the repository root on sys.path (``infra`` is a
top-level package beside ``src/``), the lab stack's config, and a captured program graph."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# pulumi_aws warns at import about its deprecated V2 classes (the program uses none of them).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_aws

    # Touching a class runs the lazy import of its module, and with it the warnings.
    for _module, _cls in (("s3", "Bucket"), ("cloudfront", "Distribution"), ("route53", "Record")):
        getattr(getattr(pulumi_aws, _module), _cls)

from infra import graph as graph_mod  # noqa: E402
from infra import stack_config  # noqa: E402
from infra.apply import capture_config  # noqa: E402


@pytest.fixture
def lab_config() -> dict[str, str]:
    return stack_config.load("lab")


@pytest.fixture
def program(lab_config: dict[str, str]) -> graph_mod.Graph:
    """The whole program under fresh mocks (a new event loop and set_mocks in each capture)."""
    return capture_config(lab_config)
