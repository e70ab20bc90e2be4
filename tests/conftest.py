pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.apps",
    "tests.fixtures.directory",
    "tests.fixtures.live",
    "tests.fixtures.databases",
    "tests.fixtures.proxy",
    "tests.fixtures.browser",
    "tests.fixtures.oidc",
    "tests.fixtures.replicas",
    "tests.fixtures.scene",
    "tests.fixtures.tls",
]
