"""The commands printed in the README and the docs compose as written (keys, experiments, groups).

Each `python train.py ...` / `python eval.py ...` line of a code block is checked the way the
entry points check a command before running it (`check_overrides`: composition, types, ranges),
without running it. Placeholders (RUN, DIR, <...>, PATH) are filled with a value of their kind.
"""

from __future__ import annotations

import re
import shlex

import pytest

from scatterlab.errors import ConfigError
from scatterlab.overrides import check_overrides
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
COMMAND = re.compile(
    r"^\s*(?:\$ )?(?:\.venv/bin/)?(?:python|scatterlab-)(?:\s+)?(train|eval)(?:\.py)?\s"
)
# what this machine cannot do is not a mistake of the page
MACHINE = ("has no CUDA GPU", "CUDA GPU(s)")


def commands() -> list[tuple[str, str, str | None]]:
    """(where, command line, the `error:` line the page shows under it, if any)."""
    out = []
    for page in PAGES:
        in_block = False
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            j = i
            while line.rstrip().endswith("\\") and j + 1 < len(lines):  # continued lines
                j += 1
                line = line.rstrip()[:-1] + " " + lines[j].strip()
            if in_block and COMMAND.match(line) and not PLACEHOLDER.search(line):
                after = lines[j + 1].strip() if j + 1 < len(lines) else ""
                shown = after.removeprefix("error: ") if after.startswith("error: ") else None
                out.append((f"{page.relative_to(ROOT)}: {line.strip()}", line, shown))
    return out


PLACEHOLDER = re.compile(r"=(NAME|X|N)\b")  # study=NAME: a pattern, not a command


def _args(line: str) -> tuple[str, list[str]]:
    line = line.split(" #")[0].strip().removeprefix("$ ")
    line = re.sub(r"<[^>]+>", "x", line)
    words = shlex.split(line)
    script = "eval" if "eval" in words[0] + (words[1] if len(words) > 1 else "") else "train"
    args = [w for w in words[1:] if not w.endswith(("train.py", "eval.py"))]
    args = [a for a in args if a not in ("[overrides]", "...", "[key=value", "...]")]
    args = [re.sub(r"=(RUN|DIR|PATH|THAT_RUN_DIR)(/|$)", r"=/tmp/x\2", a) for a in args]
    return script, [a for a in args if "..." not in a and "KEY=VALUE" not in a]


CASES = commands()


def test_the_pages_have_commands() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("where, line, shown", CASES, ids=[c[0][:90] for c in CASES])
def test_command_composes_as_written(where: str, line: str, shown: str | None) -> None:
    """A command composes; one the page shows failing fails with the very line it shows."""
    script, args = _args(line)
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        pytest.skip("Hydra's own flags (--help, --cfg)")
    try:
        check_overrides(str(ROOT / "configs"), script, args)
    except ConfigError as e:
        if shown is not None:
            assert str(e) == shown, where
        elif not any(m in str(e) for m in MACHINE):
            raise AssertionError(f"{where}\n  -> error: {e}") from None
    else:
        # an eval.py error about a file the page made (a crafted checkpoint) needs the file
        assert shown is None or script == "eval", f"{where}: the page shows an error, not this"
