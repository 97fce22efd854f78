"""The database: its schema, migrations, the writer's upserts, read queries and the lock."""
