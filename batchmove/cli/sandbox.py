"""`batchmove sandbox`: serve the local imitation of WeChat until Ctrl-C."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from batchmove.cli.app import clear_errors, cli
from batchmove.errors import UsageError


def _parse_daily_quotas(values: tuple[str, ...]) -> dict[str, int]:
    """`ENDPOINT=N` pairs -> {endpoint: n}; bad syntax or an unknown endpoint is a UsageError."""

    from batchmove.sandbox import ENDPOINTS

    quotas: dict[str, int] = {}
    for value in values:
        endpoint, sep, number = value.partition("=")
        endpoint = endpoint.strip().removeprefix("/").removeprefix("cgi-bin/")
        if not sep or not number.strip().isdigit():
            raise UsageError(f"--daily-quota expects ENDPOINT=N with N >= 0, got {value!r}")
        if endpoint not in ENDPOINTS:
            raise UsageError(
                f"--daily-quota: unknown endpoint {endpoint!r} (known: {', '.join(ENDPOINTS)})"
            )
        quotas[endpoint] = int(number)
    return quotas


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--allow-non-loopback", is_flag=True, help="Allow binding a non-loopback address.")
@click.option("--port", type=int, default=8765, show_default=True, help="0 = any free port.")
@click.option("--appid", default=None, help="[default: wxsandbox0000000001]")
@click.option("--secret", default=None, help="[default: sandbox-secret-not-real]")
@click.option("--users", type=int, default=200, show_default=True, help="Generated followers.")
@click.option("--users-file", type=click.Path(dir_okay=False), default=None,
              help="Followers, one openid a line (instead of --users).")
@click.option("--from", "from_file", type=click.Path(dir_okay=False), default=None,
              help="Start with exactly the followers, groups, tags and memberships of a "
                   "`batchmove export` file (CSV or XLSX; instead of --users).")
@click.option("--quota-from-plan", type=click.Path(dir_okay=False), default=None,
              metavar="PLAN.JSON", help="Daily quotas as a plan of the real account found "
                                        "them left (--daily-quota wins).")
@click.option("--seed", type=int, default=0, show_default=True, help="Openids and fault RNG.")
@click.option("--token-ttl", type=float, default=7200.0, show_default=True, help="Seconds.")
@click.option("--max-groups", type=int, default=500, show_default=True,
              help="Groups in total, the three reserved ones included.")
@click.option("--group", "groups", multiple=True, help="Pre-create a group (repeatable).")
@click.option("--max-tags", type=int, default=100, show_default=True,
              help="Tags an account may create (the reserved 0/1/2 not counted).")
@click.option("--tag", "tags", multiple=True, metavar="NAME",
              help="Pre-create a tag (repeatable); ids from 100.")
@click.option("--tag-delete-limit", type=int, default=100_000, show_default=True,
              help="A tag with more members than this cannot be deleted (45057).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--jitter-ms", type=float, default=0.0, show_default=True,
              help="Uniform extra latency, 0..N ms.")
@click.option("--error-rate", type=float, default=0.0, show_default=True,
              help="Share of calls answered errcode -1.")
@click.option("--http-error-rate", type=float, default=0.0, show_default=True,
              help="Share of calls answered HTTP 502/503.")
@click.option("--drop-rate", type=float, default=0.0, show_default=True,
              help="Share of calls whose connection is closed unanswered.")
@click.option("--hang-rate", type=float, default=0.0, show_default=True,
              help="Share of calls applied but never answered.")
@click.option("--minute-quota", type=int, default=None, help="Calls a minute, all endpoints.")
@click.option("--daily-quota", "daily_quota", multiple=True, metavar="ENDPOINT=N",
              help="Override one endpoint's daily quota (repeatable).")
@click.option("--page-size", type=int, default=10_000, show_default=True,
              help="Followers per user/get page.")
@click.option("--platform", "authorizers", type=int, default=None, metavar="N",
              help="Imitate a third-party platform with N authorizer accounts, each with the "
                   "followers and settings above (appids wxauth0000000000001...).")
@click.option("--push-ticket-to", metavar="URL",
              help="With --platform: push a fresh encrypted ticket to this receiver every "
                   "10 minutes, as WeChat does.")
@clear_errors
def sandbox_command(host: str, allow_non_loopback: bool, port: int, appid: str | None,
                    secret: str | None, users_file: str | None, groups: tuple[str, ...],
                    tags: tuple[str, ...], daily_quota: tuple[str, ...],
                    quota_from_plan: str | None,
                    authorizers: int | None, push_ticket_to: str | None,
                    **settings: Any) -> None:
    """Serve a local imitation of WeChat's group and tag APIs (with faults), and of a WeCom
    group robot and a ping receiver (for [notify]), until Ctrl-C; with --platform, of a
    third-party platform and its authorizer accounts."""

    from batchmove.sandbox import PlatformConfig, SandboxConfig, SandboxConfigError, serve
    from batchmove.sandbox.config import is_loopback
    from batchmove.sandbox.seed import quota_from_plan as plan_quotas

    if not is_loopback(host) and not allow_non_loopback:
        raise UsageError(f"refusing to bind non-loopback address {host} "
                         "(use --allow-non-loopback to expose the sandbox)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        if appid is not None:
            settings["appid"] = appid
        if secret is not None:
            settings["secret"] = secret
        quotas = plan_quotas(Path(quota_from_plan)) if quota_from_plan else {}
        quotas |= _parse_daily_quotas(daily_quota)
        config = SandboxConfig(users_file=users_file, groups=groups, tags=tags,
                               daily_quota=quotas, **settings)
        if users_file:
            config.follower_openids()  # an unreadable file fails before binding
        platform = None
        if authorizers is not None:
            if appid is not None or secret is not None:
                raise UsageError("--appid and --secret name one account: with --platform "
                                 "each authorizer has its own")
            shared = {k: v for k, v in asdict(config).items() if k not in ("appid", "secret",
                                                                          "seed")}
            platform = PlatformConfig(authorizers=authorizers, account=shared)
        elif push_ticket_to:
            raise UsageError("--push-ticket-to needs --platform N")
    except SandboxConfigError as exc:
        raise UsageError(str(exc)) from exc
    try:
        serve(config, host, port, platform, push_ticket_to)  # reads an export before binding
    except SandboxConfigError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


