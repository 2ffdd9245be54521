from services.notifier.adapters.tables import SCHEMA, metadata
from shared.migrations import run_migrations

run_migrations(metadata, SCHEMA)
