"""The stories, each read top to bottom in one module: a run (`run`), a plan (`plan`), a
verification (`verify`), a segment job's selection (`segments`), an export (`export`), an undo
(`rollback`) and a third-party platform's accounts (`agency`).
They put the stages (intake, ledger, engine, output) in order; the public API calls them."""
