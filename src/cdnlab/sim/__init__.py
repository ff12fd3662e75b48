"""The cache simulator: trace readers, replay through :mod:`cdnlab.eviction` policies (the
daemon's own code), Belady's offline bound, and a seeded synthetic CDN workload generator."""
