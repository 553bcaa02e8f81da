"""pytest fixtures for the cluster harness (owned by the cluster tier)."""
