"""The page's language follows the browser's Accept-Language."""

from __future__ import annotations

import re

import pytest

from batchmove.console.i18n import js_strings, language, translator


@pytest.mark.parametrize(("accept", "lang"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"), ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("zh-TW", "zh"), ("fr-FR,fr;q=0.9", "en"), ("", "en"), ("en;q=0.5, zh;q=0.6", "zh"),
    ("zh;q=nonsense, en", "en"), ("*", "en")])
def test_language(accept: str, lang: str) -> None:
    assert language(accept) == lang


def test_every_word_has_both_languages() -> None:
    en, zh = translator("en"), translator("zh")
    assert en("plan.approve") == "Approve and run"
    assert zh("plan.approve") == "批准并运行"
    assert zh("plan.days", n=3) == "需要 3 天"
    assert en("no.such.key") == "no.such.key"
    assert set(js_strings("zh")) == set(js_strings("en"))
    assert all(js_strings("zh")[k] != k for k in js_strings("zh"))


def test_no_word_of_the_page_is_command_line_wording() -> None:
    from batchmove.console.i18n import _TEXT

    cli = re.compile(r"(?<![\w-])--[a-z]|command line|命令行参数|batchmove (?:run|serve|plan)")
    for key, pair in _TEXT.items():
        if key != "source.cli":  # where a run came from: "the command line" is a place
            assert not [text for text in pair if cli.search(text)], key
