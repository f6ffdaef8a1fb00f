"""MkDocs hooks: the site reads the repository as it is (mkdocs.yml names this file).

- The home page is README.md itself (no docs/index.md to keep in step with it).
- Pages link repository files by their path from the page, as on GitHub:
  `../results/NAME.png` from docs/PAGE.md, `results/NAME.png` from README.md,
  `docs/PAGE.md` from README.md. Every file under results/, and any other repository
  file a page links to (`../configs/study/NAME.yaml`), is copied into the site at its
  repository path, and the link is rewritten to it. A link to a file that does not exist
  stays as it is, so `mkdocs build --strict` fails on it.
- The API reference has one page per plain-torch package of `src/scatterlab/` (every folder
  with an `__init__.py`, except the Lightning and Hydra layers in `NOT_API`), generated as
  `api/PACKAGE.md` = `::: scatterlab.PACKAGE` (mkdocstrings; its submodules too when the
  package has no `__all__`) and appended to the "API
  reference" section of the navigation, so a new package is documented without editing
  mkdocs.yml; a hand-written `docs/api/PACKAGE.md` replaces the generated page. The marker
  `<!-- api packages -->` in a page becomes a table of them with their docstrings' first lines.
- A list that starts right under a paragraph line (GitHub renders it as a list, Python-Markdown
  as part of the paragraph) gets a blank line before it.
- Inside `<!-- include: results/NAME.md -->` blocks (filled by scripts/sync_docs.py) the
  links are relative to the included file, as they are in results/, and its headings are
  shown as bold lines, so that they do not enter the page's table of contents.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.nav import Section, _add_previous_and_next_links
from mkdocs.structure.pages import Page

INCLUDE = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- end include -->)", re.DOTALL)
FENCE = re.compile(r"^([ \t]*)(```|~~~).*?^\1\2[ \t]*$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HOME = "index.md"
API_SECTION = "API reference"
API_MARKER = "<!-- api packages -->"
NOT_API = {"modules", "data", "callbacks"}  # the Lightning / Hydra layers, not plain torch


class RepoFile(File):
    """A repository file outside docs/, copied as it is (a results .md is not a page)."""

    def is_documentation_page(self) -> bool:
        return False


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _repo_path(base: str, target: str) -> str | None:
    """Repository-relative path of `target` written in a file of directory `base`."""
    path = posixpath.normpath(posixpath.join(base, target))
    return None if path.startswith("../") or path == ".." else path


def _site_path(repo_path: str) -> str:
    """Where a repository file lives in the site: docs/X at X, README.md at the home page,
    any other file at its path."""
    if repo_path == "README.md":
        return HOME
    return repo_path[len("docs/") :] if repo_path.startswith("docs/") else repo_path


def api_packages(root: Path) -> dict[str, str]:
    """The plain-torch packages of src/scatterlab and the first line of their docstrings."""
    out = {}
    for init in sorted((root / "src" / "scatterlab").glob("*/__init__.py")):
        name = init.parent.name
        if name in NOT_API or name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        out[name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def _has_all(root: Path, name: str) -> bool:
    tree = ast.parse((root / "src" / "scatterlab" / name / "__init__.py").read_text())
    targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    return any(getattr(t, "id", "") == "__all__" for t in targets)


def _links(text: str):
    for match in LINK.finditer(FENCE.sub("", text)):
        target = match.group(2).split("#", 1)[0]
        if target and not SCHEME.match(target) and not target.startswith("/"):
            yield target


def on_files(files: Files, config) -> Files:
    root = _root(config)
    docs = Path(config.docs_dir).resolve()
    known = {f.src_uri for f in files}
    if HOME not in known:
        files.append(File.generated(config, HOME, content=(root / "README.md").read_text()))
        known.add(HOME)

    def add(repo_path: str) -> None:
        site = _site_path(repo_path)
        if site not in known and (root / repo_path).is_file():
            files.append(RepoFile(repo_path, str(root), config.site_dir, config.use_directory_urls))
            known.add(site)

    for name in api_packages(root):
        uri = f"api/{name}.md"
        if uri not in known:
            content = f"# scatterlab.{name}\n\n::: scatterlab.{name}\n"
            if not _has_all(root, name):  # no public names listed: show the submodules
                content += "    options:\n      show_submodules: true\n"
            files.append(
                File.generated(config, uri, content=content, inclusion=InclusionLevel.NOT_IN_NAV)
            )
            known.add(uri)
    for path in sorted((root / "results").rglob("*")):
        if path.is_file():
            add(path.relative_to(root).as_posix())
    sources = [(root / "README.md", "")]
    for page in docs.rglob("*.md"):
        folder = page.parent.relative_to(docs).as_posix()
        sources.append((page, posixpath.normpath("docs/" + folder)))
    for path, base in sources:
        for target in _links(path.read_text()):
            repo_path = _repo_path(base, target)
            if repo_path and not repo_path.startswith("docs/"):
                add(repo_path)
    return files


def on_nav(nav, config, files):
    """Append the API pages that the navigation does not list to its API section."""
    section = next(
        (s for s in nav.items if isinstance(s, Section) and s.title == API_SECTION), None
    )
    if section is None:
        return nav
    listed = {p.file.src_uri for p in nav.pages}
    added = []
    for name in api_packages(_root(config)):
        file = files.get_file_from_path(f"api/{name}.md")
        if file is not None and file.src_uri not in listed:
            page = Page(f"scatterlab.{name}", file, config)
            page.parent = section
            section.children.append(page)
            added.append(page)
    if added:
        last = max(i for i, p in enumerate(nav.pages) if p.parent is section)
        nav.pages[last + 1 : last + 1] = added
        _add_previous_and_next_links(nav.pages)
    return nav


def _api_table(config) -> str:
    rows = [
        f"| [`scatterlab.{name}`]({name}.md) | {line} |"
        for name, line in api_packages(_root(config)).items()
    ]
    return "| package | what |\n|---|---|\n" + "\n".join(rows) + "\n"


def _rewrite(text: str, base: str, page_dir: str) -> str:
    """Rewrite the links of `text` (written in repository directory `base`) for the site."""

    def fix(match: re.Match) -> str:
        target = match.group(2)
        path, sep, anchor = target.partition("#")
        if not path or SCHEME.match(path) or path.startswith("/"):
            return match.group(0)
        repo_path = _repo_path(base, path)
        if repo_path is None:
            return match.group(0)
        new = posixpath.relpath(_site_path(repo_path), page_dir or ".")
        return match.group(1) + new + sep + anchor + match.group(3)

    out, last = [], 0
    for fence in FENCE.finditer(text):
        out.append(LINK.sub(fix, text[last : fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(fix, text[last:]))
    return "".join(out)


ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s")


def _loosen_lists(text: str) -> str:
    """Insert a blank line between a paragraph line and a list item that follows it."""
    out, fence, prev = [], False, ""
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif (
            not fence
            and ITEM.match(line)
            and not line.startswith(" ")
            and prev.strip()
            and not prev.startswith((" ", "#", "|", "<", "```", "~~~"))
            and not ITEM.match(prev)
        ):
            out.append("")
        out.append(line)
        prev = line
    return "\n".join(out)


def _demote(text: str) -> str:
    out, last = [], 0
    for fence in FENCE.finditer(text):
        out.append(HEADING.sub(r"**\1**", text[last : fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(HEADING.sub(r"**\1**", text[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    page_dir = posixpath.dirname(src)
    if API_MARKER in markdown and page_dir == "api":
        markdown = markdown.replace(API_MARKER, _api_table(config))
    home = src == HOME and page.file.generated_by
    base = "" if home else posixpath.normpath(posixpath.join("docs", page_dir))

    def include(match: re.Match) -> str:
        body = _demote(_rewrite(match.group(3), posixpath.dirname(match.group(2)), page_dir))
        return match.group(1) + body + match.group(4)

    out, last = [], 0
    for match in INCLUDE.finditer(markdown):
        out.append(_rewrite(markdown[last : match.start()], base, page_dir))
        out.append(include(match))
        last = match.end()
    out.append(_rewrite(markdown[last:], base, page_dir))
    return _loosen_lists("".join(out))
