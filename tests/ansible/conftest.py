"""Fixtures for the Ansible tests: see ansible_lab.py."""

from ansible_lab import lab_hosts

__all__ = ["lab_hosts"]
