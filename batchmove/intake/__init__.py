"""Stage 1, intake: what to do (job file -> `JobSpec`) and the rows to do it for (spreadsheet ->
validated `InputRow`s with their own row numbers). The only package that imports pandas."""
