"""The documentation: README.md and docs/ pages, their result tables and their links.

The result tables inside the pages are the committed results files, verbatim
(scripts/sync_docs.py); the site itself is built with `mkdocs build --strict` by
`make test`, which fails on a broken link or a missing figure.
"""

import re
import sys

import pytest

from scatterlab import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from sync_docs import BLOCK, pages, render  # noqa: E402

PAGES = pages(ROOT)


def _id(path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_tables_match_results(page) -> None:
    text = page.read_text()
    assert render(text) == text, f"{_id(page)} is stale: run `python scripts/sync_docs.py`"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_includes_exist(page) -> None:
    for match in BLOCK.finditer(page.read_text()):
        assert (ROOT / match.group(2)).exists(), f"{_id(page)}: {match.group(2)}"


def test_render_replaces_a_stale_table(tmp_path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("| a |\n|---|\n| 2 |\n")
    stale = "x\n<!-- include: results/t.md -->\n| a |\n|---|\n| 1 |\n<!-- end include -->\ny\n"
    fresh = render(stale, tmp_path)
    assert "| 2 |" in fresh and "| 1 |" not in fresh and fresh != stale
    assert render(fresh, tmp_path) == fresh


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1).splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")


def test_readme_is_a_front_page() -> None:
    """Short enough to read in two minutes; the details are in docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\((docs/[^)#\s]+)", text):
        assert (ROOT / target).exists(), target


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert page.relative_to(ROOT / "docs").as_posix() in nav, _id(page)


def test_site_links_to_results_and_pages() -> None:
    """The hook (scripts/mkdocs_hooks.py) maps repository paths to site paths."""
    from mkdocs_hooks import _rewrite

    # from docs/PAGE.md, as on GitHub
    assert _rewrite("![f](../results/a.png)", "docs", "") == "![f](results/a.png)"
    assert _rewrite("[w](wsgm.md#running)", "docs", "") == "[w](wsgm.md#running)"
    assert _rewrite("[h](../README.md#citing)", "docs", "") == "[h](index.md#citing)"
    # from docs/api/PAGE.md
    assert _rewrite("![f](../../results/a.png)", "docs/api", "api") == "![f](../results/a.png)"
    # from README.md (the home page)
    assert _rewrite("[s](docs/studies.md) ![f](results/a.png)", "", "") == (
        "[s](studies.md) ![f](results/a.png)"
    )
    # inside an included results file: relative to results/
    assert _rewrite("![f](a.png)", "results", "") == "![f](results/a.png)"
    # code blocks and external links are left alone
    text = "```\n[x](../results/a.png)\n```\n[e](https://example.org/a.png)"
    assert _rewrite(text, "docs", "") == text


def test_site_lists_under_a_paragraph() -> None:
    """A list right under a paragraph line is a list in the site too, as on GitHub."""
    from mkdocs_hooks import _loosen_lists

    assert _loosen_lists("Settings:\n- a\n- b") == "Settings:\n\n- a\n- b"
    for text in ("# H\n- a", "- a\n- b", "```\nx\n- a\n```", "text\n\n- a", "- a\n  b\n- c"):
        assert _loosen_lists(text) == text
