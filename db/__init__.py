"""Persistence: typed SQLAlchemy models, sessions, Alembic migrations, the job queue and data access."""
