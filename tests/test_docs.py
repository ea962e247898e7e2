"""The docs stay complete and navigable: every CLI option, every job key, every link.

As sqlite-utils checks its CLI reference: an option or a job key added without a line in the docs
fails here, named, instead of being found missing by a user. Links are checked the way GitHub
renders them (relative paths, and `#anchors` by GitHub's heading slugs).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import unicodedata
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import click
import pytest

from batchmove.cli import cli
from batchmove.intake import jobfile, jobtables
from batchmove.sandbox import SandboxConfig
from tests.support import docrun
from tests.support.sandboxes import SandboxFactory

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_CHARS = 12_000

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@cache
def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` or `# y` in code is not markdown)."""
    return _FENCE.sub("", text_of(path))


def all_docs() -> str:
    return "\n".join(text_of(p) for p in pages())


def mentions(text: str, word: str) -> bool:
    """`word` as a whole token: `-y` must not be found inside `--yes`, nor `out` in `about`."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# --- (a) every option of every command --------------------------------------------------------


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    """Through click's own lookup: the top group imports a command's module when asked."""
    found: list[tuple[str, click.Command]] = [(prefix, group)]
    context = click.Context(group, info_name=prefix)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, f"`{prefix} {name}` is listed but cannot be found"
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


def cli_options() -> list[tuple[str, str]]:
    """(command path, option string) for every option, flag pair halves and -h/--help included."""
    options: list[tuple[str, str]] = []
    for path, command in _commands(cli, "batchmove"):
        context = click.Context(command, info_name=path)
        for param in command.get_params(context):
            if isinstance(param, click.Option):
                options += [(path, opt) for opt in (*param.opts, *param.secondary_opts)]
    return options


def test_the_cli_has_options_to_check() -> None:
    commands = {path for path, _ in cli_options()}
    assert {"batchmove run", "batchmove plan", "batchmove sandbox"} <= commands
    assert ("batchmove run", "--no-create-groups") in cli_options()


@pytest.mark.parametrize(("command", "option"), cli_options())
def test_cli_option_is_documented(command: str, option: str) -> None:
    assert mentions(all_docs(), option), f"`{command} {option}` is in no docs page nor README"


def test_every_command_is_in_the_readme_command_table() -> None:
    readme = prose(README)
    names = cli.list_commands(click.Context(cli, info_name="batchmove"))
    missing = [name for name in names if f"`batchmove {name}" not in readme]
    assert not missing, f"commands missing from README's command table: {missing}"


# --- (b) every job key --------------------------------------------------------------------------


def job_keys() -> list[str]:
    """Every key a job file accepts: top-level keys, tables, and each table's keys."""
    keys = [*jobfile._TOP, *(f"[{t}]" for t in jobfile._TABLES)]
    keys += [f"columns.{k}" for k in jobtables.COLUMN_KEYS]
    keys += [f"credentials.{k}" for k in jobtables.CREDENTIAL_KEYS]
    keys += [f"sandbox.{f.name}" for f in fields(SandboxConfig)]
    return keys


def test_the_job_file_has_keys_to_check() -> None:
    keys = job_keys()
    assert {"input", "batch_size", "[credentials]", "credentials.token_command"} <= set(keys)


@pytest.mark.parametrize("key", job_keys())
def test_job_key_is_documented_in_jobs_page(key: str) -> None:
    name = key.rpartition(".")[2]
    assert f"`{name}`" in text_of(DOCS / "jobs.md"), f"job key {key} is not in docs/jobs.md"


# --- (c) links and anchors ----------------------------------------------------------------------


def github_slug(heading: str) -> str:
    """GitHub's heading id: the rendered text, lower-cased, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Heading ids of a page; a repeated heading gets -1, -2... as on GitHub."""
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for match in _HEADING.finditer(prose(path)):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def relative_links() -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    for page in pages():
        for target in _LINK.findall(prose(page)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                links.append((str(page.relative_to(ROOT)), target))
    return links


def test_slugs_follow_githubs_rules() -> None:
    assert github_slug("Plan, rollback, verify") == "plan-rollback-verify"
    assert github_slug("The `[sandbox]` table") == "the-sandbox-table"
    assert github_slug("run and plan") == "run-and-plan"
    assert github_slug("Using as a library: `batchmove.run`") == "using-as-a-library-batchmoverun"
    assert github_slug("目标分组 (groups)") == "目标分组-groups"


def test_there_are_links_to_check() -> None:
    targets = {target for _, target in relative_links()}
    assert "docs/library.md" in targets
    assert any("#" in target for target in targets)


@pytest.mark.parametrize(("page", "target"), relative_links())
def test_relative_link_resolves(page: str, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    source = ROOT / page
    destination = (source.parent / file_part).resolve() if file_part else source
    assert destination.exists(), f"{page}: link to {target}: no such file"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), f"{page}: link to {target}: no such heading"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve()
              for page, target in relative_links() if page == "README.md"}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def repository_paths() -> list[tuple[str, str]]:
    """Files and folders of this repository that the docs name in backticks."""
    named = re.compile(r"`((?:batchmove|tests|bench|jobs|sample_data|docs)/[\w./-]*)`")
    return [(str(page.relative_to(ROOT)), path) for page in pages()
            for path in named.findall(text_of(page))]


def made_by_tests(path: str) -> bool:
    """A folder the tests write into (listed in .gitignore): it exists once they ran."""
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    return f"/{path}" in ignored or f"/{path.rstrip('/')}/" in ignored


@pytest.mark.parametrize(("page", "path"), repository_paths())
def test_named_repository_path_exists(page: str, path: str) -> None:
    exists = (ROOT / path).exists() or made_by_tests(path)
    assert exists, f"{page} names {path}, which does not exist (moved?)"


# --- the architecture page describes the package as it is --------------------------------------


def package_parts() -> list[str]:
    """Top-level modules (`api.py`), packages (`engine/`) and the modules inside those
    (`engine/moves`): what docs/architecture.md's layout table must name."""
    package = ROOT / "batchmove"
    parts: list[str] = []
    for entry in sorted(package.iterdir()):
        if entry.suffix == ".py" and entry.name != "__main__.py":
            parts.append(entry.name)
        elif (entry / "__init__.py").exists():
            parts.append(f"{entry.name}/")
            parts += [f"{entry.name}/{m.stem}" for m in sorted(entry.glob("*.py"))
                      if m.name not in ("__init__.py", "__main__.py")]
    return parts


def layout_rows() -> dict[str, str]:
    """docs/architecture.md's layout table: first cell (`api.py`, `engine/`) -> the row."""
    rows: dict[str, str] = {}
    for line in text_of(DOCS / "architecture.md").splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1).removeprefix("batchmove/")] = line
    return rows


@pytest.mark.parametrize("part", package_parts())
def test_architecture_page_names_every_module(part: str) -> None:
    """`api.py` and `engine/` have a row; a module inside a package is named in its row."""
    package, _, module = part.partition("/")
    rows = layout_rows()
    if not module:
        assert part in rows, f"docs/architecture.md has no row for batchmove/{part}"
    else:
        row = rows.get(f"{package}/", "")
        assert f"`{module}`" in row, (
            f"docs/architecture.md: the row of {package}/ does not name `{module}`")


# --- the library page's examples run as they are ------------------------------------------------


def library_examples() -> list[str]:
    """The ```python blocks of docs/library.md (the signature block is ```text)."""
    return re.findall(r"^```python\n(.*?)^```", text_of(DOCS / "library.md"), re.M | re.S)


def test_library_page_has_examples() -> None:
    examples = library_examples()
    assert len(examples) >= 4
    assert any("threading.Thread" in e and "exit_code" in e for e in examples)


@pytest.mark.parametrize("number", range(len(library_examples())))
def test_library_example_runs(number: int, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example in a copy of the checkout's jobs/ and sample_data/ (runs go to tmp)."""
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    code = compile(library_examples()[number], f"docs/library.md example {number + 1}", "exec")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {"__name__": f"library_example_{number + 1}"})
    output = printed.getvalue()
    assert output.strip(), "the example printed nothing"
    if "next task:" in output:  # the Airflow example: the sample has deliberately bad rows
        assert "next task: review_failures" in output
    assert (tmp_path / "runs" / "sample" / "ledger.sqlite").exists() or \
        (tmp_path / "runs" / "library-errors" / "ledger.sqlite").exists()


# --- (e) every fenced example runs here, or says it is an excerpt ------------------------------
#
# A block a reader may paste must work when pasted. So every fence in README.md and docs/ is one
# of three kinds:
# - runnable (```python, ```toml, ```sh, unmarked): run below, against a sandbox, in a copy of
#   the checkout's jobs/ and sample_data/;
# - `<!-- file: PATH -->` on the line before: the block's lines are lines of PATH (relative to
#   the page), in order; the file itself is run by its own test (tests/test_scheduling.py);
# - `<!-- excerpt -->` (or `<!-- excerpt: why -->`) on the line before: output, a synopsis, a
#   diagram, or a command that needs what only the reader has (their accounts, a cluster).

_BLOCK = re.compile(r"^(```|~~~)([^\n]*)\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"^<!--\s*(excerpt\b[^>]*|file:\s*\S+)\s*-->$")
RUNNABLE = ("python", "toml", "sh")


@dataclass(frozen=True)
class Fence:
    page: Path
    line: int
    lang: str
    body: str
    mark: str | None  # "excerpt...", "file: PATH", or None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fences() -> list[Fence]:
    found = []
    for page in pages():
        text = text_of(page)
        for match in _BLOCK.finditer(text):
            before = text[:match.start()].rstrip("\n").rpartition("\n")[2].strip()
            mark = _MARK.match(before)
            found.append(Fence(page, text.count("\n", 0, match.start()) + 1,
                               match.group(2).strip(), match.group(3),
                               mark.group(1) if mark else None))
    return found


def runnable() -> list[Fence]:
    """What the run test runs: unmarked blocks, but library.md's Python, which
    `test_library_example_runs` runs and checks more closely."""
    return [f for f in fences() if f.mark is None
            and not (f.page.name == "library.md" and f.lang == "python")]


def test_there_are_fences_of_every_kind() -> None:
    found = fences()
    assert len(found) >= 40
    assert {f.lang for f in runnable()} == set(RUNNABLE)
    assert any(f.mark and f.mark.startswith("file:") for f in found)


@pytest.mark.parametrize("fence", fences(), ids=str)
def test_every_fence_runs_here_or_is_marked(fence: Fence) -> None:
    if fence.mark is None:
        assert fence.lang in RUNNABLE, (
            f"{fence}: a ```{fence.lang} block is neither run by tests/test_docs.py nor marked: "
            "put `<!-- excerpt -->` (or `<!-- file: PATH -->`) on the line before it")
    elif fence.mark.startswith("file:"):
        path = (fence.page.parent / fence.mark.partition(":")[2].strip()).resolve()
        assert path.is_file(), f"{fence}: {path} does not exist"
        lines = iter(path.read_text(encoding="utf-8").splitlines())
        missing = [line for line in fence.body.splitlines()
                   if line.strip() and not any(line == other for other in lines)]
        assert not missing, f"{fence}: not lines of {path.name}, in order: {missing[:3]}"


@pytest.mark.parametrize("fence", runnable(), ids=str)
async def test_fenced_example_runs(fence: Fence, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   sandbox_factory: SandboxFactory) -> None:
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    if fence.lang == "python":
        await asyncio.to_thread(docrun.run_python, fence.body, str(fence))
    elif fence.lang == "toml":
        await docrun.run_toml(fence.body, tmp_path, sandbox_factory)
    else:
        await asyncio.to_thread(docrun.run_sh, fence.body, tmp_path)


# --- (d) the README stays a front page ----------------------------------------------------------


def test_readme_is_at_most_12000_characters() -> None:
    size = len(text_of(README))
    assert size <= README_MAX_CHARS, f"README.md has {size} characters (> {README_MAX_CHARS})"


def test_readme_quickstart_keeps_its_two_commands() -> None:
    quickstart = text_of(README).partition("## Quickstart")[2].partition("\n## ")[0]
    commands = re.findall(r"^python3 -m batchmove\.dev \w+", quickstart, re.MULTILINE)
    assert commands == ["python3 -m batchmove.dev sample", "python3 -m batchmove.dev test"]
