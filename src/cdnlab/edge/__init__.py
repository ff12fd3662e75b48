"""The delivery daemon: HTTP byte ranges from RAM/flash/HDD tiers, pull-through from upstreams."""
