"""The README's result tables are the committed results files, verbatim."""

import re
import sys

from scatterlab import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from sync_readme import BLOCK, render  # noqa: E402


def test_readme_tables_match_results() -> None:
    text = (ROOT / "README.md").read_text()
    assert render(text) == text, "run `python scripts/sync_readme.py`"


def test_readme_includes_exist() -> None:
    text = (ROOT / "README.md").read_text()
    for match in BLOCK.finditer(text):
        assert (ROOT / match.group(2)).exists(), match.group(2)


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1).splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")
