"""Cluster wing: studies and tune searches as Ray tasks (ray_run, ray_tune), the lease table their
drivers share (claims) and the connection to a cluster (ray_session)."""
