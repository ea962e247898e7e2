"""Stage 2, the ledger: the run's SQLite checkpoint and its directory. Every stage after intake
reads and writes rows through it; it owns all SQL, and its queries return named tuples."""
