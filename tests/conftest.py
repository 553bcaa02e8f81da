"""Root conftest: every tier's fixtures come from tests/harness/, one module per real part."""

pytest_plugins = [
    "tests.harness.s3_fixtures",
    "tests.harness.cluster_fixtures",
    "tests.harness.postgres_fixtures",
    "tests.harness.browser",
    "tests.harness.node_fixtures",
]
