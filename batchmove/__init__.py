"""batchmove: move WeChat Official Account followers between user groups in bulk.

    import batchmove
    result = batchmove.run("jobs/sample.toml", api_base="sandbox")
    print(result.exit_code, result.counts)

The public API is exactly `__all__`. Names load on first use (PEP 562), so `import batchmove`
costs nothing until one is used, and `python3 -m batchmove.dev` works on a bare Python with
none of the dependencies installed yet (it sets them up).
"""

# no `from __future__ import annotations` here: it would add a public name (`annotations`)
import importlib as _importlib
import typing as _typing

__version__ = "0.3.0.dev0"

#: public name -> the module that defines it
_EXPORTS = {
    "run": "batchmove.api",
    "run_async": "batchmove.api",
    "plan": "batchmove.api",
    "plan_async": "batchmove.api",
    "verify": "batchmove.api",
    "verify_async": "batchmove.api",
    "rollback": "batchmove.api",
    "rollback_async": "batchmove.api",
    "write_reports": "batchmove.api",
    "rehearse": "batchmove.api",
    "RehearsalResult": "batchmove.flows.rehearse",
    "notify": "batchmove.api",
    "job_spec": "batchmove.api",
    "export": "batchmove.api",
    "export_async": "batchmove.api",
    "view_run": "batchmove.api",
    "watch_run": "batchmove.api",
    "errcode_meaning": "batchmove.api",
    "list_accounts": "batchmove.api",
    "sync_accounts": "batchmove.api",
    "AccountInfo": "batchmove.flows.agency",
    "account_status": "batchmove.api",
    "claim_run": "batchmove.api",
    "release_run": "batchmove.api",
    "AccountStatus": "batchmove.results",
    "AccountRun": "batchmove.results",
    "Overlap": "batchmove.results",
    "ExportResult": "batchmove.flows.export",
    "JobSpec": "batchmove.models",
    "Events": "batchmove.results",
    "Progress": "batchmove.results",
    "RunResult": "batchmove.results",
    "Counts": "batchmove.results",
    "Summary": "batchmove.results",
    "Plan": "batchmove.results",
    "VerifyResult": "batchmove.results",
    "RollbackFile": "batchmove.results",
    "ReportFiles": "batchmove.results",
    "RunView": "batchmove.results",
    "RunWatch": "batchmove.results",
    "ListedRow": "batchmove.results",
    "EXIT_OK": "batchmove.errors",
    "EXIT_ROW_FAILURES": "batchmove.errors",
    "EXIT_USAGE": "batchmove.errors",
    "EXIT_STOPPED": "batchmove.errors",
    "EXIT_SIGINT": "batchmove.errors",
    "EXIT_SIGTERM": "batchmove.errors",
    "BatchmoveError": "batchmove.errors",
    "UsageError": "batchmove.errors",
    "JobFileError": "batchmove.errors",
    "InputError": "batchmove.errors",
    "RunStateError": "batchmove.errors",
    "RunLockedError": "batchmove.errors",
    "InputChangedError": "batchmove.errors",
    "ConfirmationRequired": "batchmove.errors",
    "ApiError": "batchmove.errors",
}

__all__ = [
    "EXIT_OK",
    "EXIT_ROW_FAILURES",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "AccountInfo",
    "AccountRun",
    "AccountStatus",
    "ApiError",
    "BatchmoveError",
    "ConfirmationRequired",
    "Counts",
    "Events",
    "ExportResult",
    "InputChangedError",
    "InputError",
    "JobFileError",
    "JobSpec",
    "ListedRow",
    "Overlap",
    "Plan",
    "Progress",
    "RehearsalResult",
    "ReportFiles",
    "RollbackFile",
    "RunLockedError",
    "RunResult",
    "RunStateError",
    "RunView",
    "RunWatch",
    "Summary",
    "UsageError",
    "VerifyResult",
    "__version__",
    "account_status",
    "claim_run",
    "errcode_meaning",
    "export",
    "export_async",
    "job_spec",
    "list_accounts",
    "notify",
    "plan",
    "plan_async",
    "rehearse",
    "release_run",
    "rollback",
    "rollback_async",
    "run",
    "run_async",
    "sync_accounts",
    "verify",
    "verify_async",
    "view_run",
    "watch_run",
    "write_reports",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchmove' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if _typing.TYPE_CHECKING:  # what type checkers and IDEs see
    from batchmove.api import (
        account_status,
        claim_run,
        errcode_meaning,
        export,
        export_async,
        job_spec,
        list_accounts,
        notify,
        plan,
        plan_async,
        rehearse,
        release_run,
        rollback,
        rollback_async,
        run,
        run_async,
        sync_accounts,
        verify,
        verify_async,
        view_run,
        watch_run,
        write_reports,
    )
    from batchmove.errors import (
        EXIT_OK,
        EXIT_ROW_FAILURES,
        EXIT_SIGINT,
        EXIT_SIGTERM,
        EXIT_STOPPED,
        EXIT_USAGE,
        ApiError,
        BatchmoveError,
        ConfirmationRequired,
        InputChangedError,
        InputError,
        JobFileError,
        RunLockedError,
        RunStateError,
        UsageError,
    )
    from batchmove.flows.agency import AccountInfo
    from batchmove.flows.export import ExportResult
    from batchmove.flows.rehearse import RehearsalResult
    from batchmove.models import JobSpec
    from batchmove.results import (
        AccountRun,
        AccountStatus,
        Counts,
        Events,
        ListedRow,
        Overlap,
        Plan,
        Progress,
        ReportFiles,
        RollbackFile,
        RunResult,
        RunView,
        RunWatch,
        Summary,
        VerifyResult,
    )
