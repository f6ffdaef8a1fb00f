"""Keep the result tables of README.md and docs/ equal to the committed results files.

Every block between `<!-- include: results/NAME.md -->` and `<!-- end include -->` in
README.md and in every page under docs/ is replaced by that file's text (the path is
relative to the repository root). `--check` only reports the pages whose blocks differ
(exit code 1), as the test suite does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- end include -->)", re.DOTALL)


def render(text: str, root: Path = ROOT) -> str:
    def fill(match: re.Match) -> str:
        path = root / match.group(2)
        body = path.read_text() if path.exists() else f"(missing: {match.group(2)})\n"
        return match.group(1) + body.rstrip("\n") + "\n" + match.group(4)

    return BLOCK.sub(fill, text)


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page of the documentation."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def stale(root: Path = ROOT) -> list[Path]:
    """The pages whose include blocks differ from their results files."""
    return [p for p in pages(root) if render(p.read_text(), root) != p.read_text()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a page is stale")
    args = parser.parse_args()
    if args.check:
        for path in stale():
            print(f"{path.relative_to(ROOT)}: result tables differ from results/")
        if stale():
            print("run: python scripts/sync_docs.py")
            return 1
        return 0
    for path in stale():
        path.write_text(render(path.read_text()))
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
