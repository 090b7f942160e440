"""`rtvol keys`: API keys and the hashed lines the services' keys file holds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtvol.cli.common import Commands

from rtvol.cli.common import CommandError


def _new_key(a: argparse.Namespace) -> None:
    from rtvol import auth

    if a.role not in auth.ROLES or not a.name.isprintable() or " " in a.name or not a.name:
        raise CommandError(f"NAME must be one word and ROLE one of {sorted(auth.ROLES)}")
    key = auth.new_key()
    line = f"{a.name} {a.role} {auth.hash_key(key)}\n"
    if a.key_out:
        fd = os.open(a.key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    else:
        print(key)
    if a.keys_file:
        with open(a.keys_file, "a") as f:
            f.write(line)
    else:
        print(line, end="")


def keys_command(sub: Commands) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True,
                                                                  metavar="TOOL")
    nk = keys.add_parser("new", help="make an API key and its keys-file line",
                         description="A random 256-bit key for NAME with ROLE (engine: read signals, "
                                     "feeder: Ingest, operator: admin and metrics, service: one rtvol "
                                     "service calling another). Prints the key, or writes it to a new "
                                     "file (mode 600), and prints the 'NAME ROLE sha256:HEX' line for the "
                                     "services' --api-keys-file, or appends it there. Only the hash is "
                                     "kept at rest; a lost key is replaced, not recovered.")
    nk.add_argument("name", help="who holds the key (one word)")
    nk.add_argument("role", help="engine | feeder | operator | service")
    nk.add_argument("--key-out", type=Path, default=None, help="write the key to this new file")
    nk.add_argument("--keys-file", type=Path, default=None, help="append the hashed line to this file")
    nk.set_defaults(run=_new_key)
