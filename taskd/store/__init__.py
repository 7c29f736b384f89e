"""PostgreSQL: the system of record (DESIGN §2)."""
