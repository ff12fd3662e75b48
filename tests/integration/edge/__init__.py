"""Integration tests of ``cdnlab edge serve``: real nginx origin, the daemon started through its CLI."""
