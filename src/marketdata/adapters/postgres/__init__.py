"""PostgreSQL: one module per job (the pool, reads, replay pages, writes, the series catalog,
migrations). Driver errors never leave this package: they become the domain's
StoreUnavailable, carrying host and port but no credentials."""
