"""History across runs and machines: a store of run records (SQLite or PostgreSQL), series and their steps."""
