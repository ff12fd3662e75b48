"""The reference player: endpoint selection, ABR, failover, QoE."""
