"""What a user reads on the console: one-line errors, no library chatter, where results went.

Kept light (no torch, no Lightning): the entry points report a mistake in the options from
here before those imports, which take seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from scatterlab.errors import ScatterlabError
from scatterlab.runs import LOCK_NAME, in_use

log = logging.getLogger("scatterlab")

# Loggers whose INFO lines (start-up banners, tips, "Seed set to") go to the run's log file only.
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "py.warnings")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user's mistake as one line `error: ...` and exit with code 2."""
    try:
        yield
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ScatterlabError):
            fail(str(cause), cause.exit_code)
        if isinstance(cause, TypeError | ValueError):
            fail(f"{str(e).splitlines()[0]} {cause}. Check the types of the config values.")
        raise
    except ScatterlabError as e:
        fail(str(e), e.exit_code)
    except MissingMandatoryValue as e:
        fail(f"{e.full_key} has no value (???): give it on the command line, {e.full_key}=...")


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` once (the run's log file keeps it too) and exit with `code`."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in {*logging.getLogger().handlers, *log.handlers}:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {message}", file=sys.stderr, flush=True)
    if _in_multirun():  # an exception, not an exit, so that the sweep's other jobs still run
        raise RuntimeError(message) from None
    _remove_refused_run_dir()
    raise SystemExit(code)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _remove_refused_run_dir() -> None:
    """A run refused before it produced anything leaves no run directory behind."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not run_dir.is_dir() or in_use(run_dir, by_others=True):
        return  # another run's directory (refused by its lock): not ours to remove
    produced = [p for p in run_dir.iterdir() if p.name not in (".hydra", LOCK_NAME)]
    if not [p for p in produced if p.suffix != ".log"]:
        logging.shutdown()  # close train.log before deleting it
        shutil.rmtree(run_dir, ignore_errors=True)


class _Chatter(logging.Filter):
    """Drops library INFO lines and warnings from a console handler (the log file keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "py.warnings":
            return False
        return not (name.startswith("lightning") and record.levelno < logging.ERROR)


def quiet_libraries() -> None:
    """Route Lightning's banners and tips and Python warnings to the log file only.

    Lightning gives its loggers a console handler of their own when it is imported before
    logging is configured (as here); they are made to propagate to Hydra's handlers instead,
    whose console handlers filter them out.
    """
    logging.captureWarnings(True)
    for name in QUIET_LOGGERS:
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                lg.removeHandler(handler)
        lg.propagate = True
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler) and not any(
            isinstance(f, _Chatter) for f in handler.filters
        ):
            handler.addFilter(_Chatter())
    # wandb's own banner and 30-line footer: the closing summary says where its files are
    # (set before wandb is imported, which reads it then; WANDB_SILENT=false brings them back)
    os.environ.setdefault("WANDB_SILENT", "true")


def done(lines: list[str]) -> None:
    """The closing lines of a command: where its results are and what to run next."""
    print("\n".join(lines), flush=True)
