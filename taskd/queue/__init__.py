"""Redis: the scheduling index and the lease table (DESIGN §4)."""
