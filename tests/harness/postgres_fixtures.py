"""pytest fixtures for the postgres harness (owned by the postgres tier)."""
