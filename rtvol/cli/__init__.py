"""The `rtvol` command. Imports stay inside handlers so `rtvol --help` starts fast.

Every flag falls back to an RTVOL_* environment variable (named in its help); flags win.
Service commands (`serve`, `bench`) forward their arguments to the component's own parser.
One module per group of commands, each with its handlers and its parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rtvol.cli.common import CommandError
from rtvol.cli.components import NOT_IN_IMAGES, bench_command, serve_command
from rtvol.cli.data import data_command
from rtvol.cli.keys import keys_command
from rtvol.cli.local import down_command, status_command, supervise_command, up_command
from rtvol.cli.models import evaluate_command, export_command, promote_command, shadow_command, train_command
from rtvol.cli.traffic import feed_command, loadtest_command

COMMANDS = (data_command, train_command, evaluate_command, export_command, promote_command,
            shadow_command, keys_command, up_command,
            down_command, status_command, supervise_command, feed_command, loadtest_command,
            serve_command, bench_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtvol", description="Real-time volatility signals: data, training, serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Typical loop: rtvol data synth --out data && rtvol train --data data "
               "--repo models && rtvol evaluate --data data --repo models --out report.json")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CommandError as e:
        print(f"rtvol: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name not in NOT_IN_IMAGES:
            raise
        print(f"rtvol: error: `rtvol {args.command}` needs {e.name}, which is not installed here "
              "(the container images carry the services only): run it from a source checkout",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
