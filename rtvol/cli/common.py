"""What every `rtvol` command shares: the user-facing error and flags with RTVOL_* fallbacks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit status 2."""


def env_value(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("RTVOL_" + flag.upper().replace("-", "_"), default)


def add(p: argparse.ArgumentParser, flag: str, help: str, default: str | None = None,
        type: Callable[[str], object] = str, env: str | None = None,
        required: bool = True) -> None:
    """--flag with an RTVOL_<ENV> fallback; required (unless told otherwise) when neither
    flag, env nor default."""
    env_name = env or flag
    value = env_value(env_name, default)
    p.add_argument(f"--{flag}", type=type, default=None if value is None else type(value),
                   required=required and value is None,
                   help=f"{help} [env RTVOL_{env_name.upper().replace('-', '_')}"
                        + (f"; default {default}]" if default is not None else "]"))


def optional_path(p: argparse.ArgumentParser, flag: str, help: str, env: str | None = None) -> None:
    """--flag PATH, None when neither the flag nor its RTVOL_<ENV> variable is given."""
    env_name = env or flag
    value = env_value(env_name)
    p.add_argument(f"--{flag}", type=Path, default=Path(value) if value else None,
                   help=f"{help} [env RTVOL_{env_name.upper().replace('-', '_')}]")
