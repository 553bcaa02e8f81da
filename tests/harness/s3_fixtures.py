"""pytest fixtures for the s3 harness (owned by the s3 tier)."""
