# The real Kafka, PostgreSQL and SMTP fixtures: session-scoped, started only by the tests that ask.
pytest_plugins = ["tests.fixtures.stack"]
