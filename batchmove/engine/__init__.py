"""Stage 3, the engine: targets resolved against the account, batches planned, the worker
pool that sends them (retries, bisection, stops), and where the calls go (WeChat or the
embedded sandbox). The runner knows nothing of ledgers: results leave it through callbacks."""
