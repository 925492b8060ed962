"""The `kubefence` command: one subcommand per job.

Each component registers its subcommands from a light `cli` module that
imports nothing heavy at import time, so `kubefence --help` stays fast and
a subcommand pays only for its own imports.
"""

import argparse
import importlib
import sys

from kubefence import __version__

# Modules with a `register(subparsers)` function, in help order.
COMMAND_MODULES = (
    "kubefence.webhook.cli",
    "kubefence.nri.cli",
    "kubefence.certs.cli",
    "kubefence.nri.nodesetup",
    "kubefence.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubefence",
        description="Sandbox untrusted Kubernetes pods with nono: admission webhook, NRI plugin and tools.",
    )
    parser.add_argument("--version", action="version", version=f"kubefence {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
