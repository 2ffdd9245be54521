"""The project's own local stack: Kafka (KRaft), PostgreSQL and an SMTP sink, run as plain processes.

`python -m deploy.devstack up|down|status` drives it for `make up`; the test fixtures in
tests/fixtures/stack.py reuse the same start functions on free ports.
"""
