"""Stage 4, output: the ledger as files an analyst opens (report.csv/xlsx, failed.csv,
summary.json) and the review of a finished run (rollback, verify). Never calls the API itself."""
