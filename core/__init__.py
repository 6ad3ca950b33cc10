"""Core: the ground floor every package stands on: settings, errors, the store (tables, migrations, sessions, the
writer queue), named locks, run rows, the adapter registry, the one prompt and the one "the agent changed it"."""
