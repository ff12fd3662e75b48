"""The lab: stands the CDN up on this machine and proves it end to end."""
