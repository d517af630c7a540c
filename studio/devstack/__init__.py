"""The development stack: embedded PostgreSQL and Redis, and the launcher behind ``make run``."""
