"""cdnlab: a multi-tier CDN delivered as code."""

__version__ = "0.1.0"
