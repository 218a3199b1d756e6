"""Runs beyond one process: `batch --ray` on a Ray cluster (ray_batch, the only module that imports Ray)."""
