"""The control plane: registry, health monitor, inventory, steering, analytics (HTTP API)."""
