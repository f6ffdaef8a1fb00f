"""Keep the README's result tables equal to the committed results files.

Every block between `<!-- include: results/NAME.md -->` and `<!-- end include -->` in
README.md is replaced by that file's text. `--check` only reports blocks that differ
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md result tables differ from results/: run scripts/sync_readme.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
