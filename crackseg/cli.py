"""The ``crackseg`` command.

Each subcommand lives in a module of :mod:`crackseg.commands` that defines
``register(subparsers)``; the parser it adds sets ``func`` to the function
that runs it.  Command modules import heavy libraries (torch, Lightning)
inside that function, so ``crackseg --help`` stays fast.

User errors (:class:`crackseg.errors.CracksegError`) print one line to stderr
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from crackseg._version import __version__
from crackseg.errors import CracksegError

EXIT_USER_ERROR = 2

OPTIONAL_MODULES = {
    "pytorch_lightning": "train", "lightning": "train", "jsonargparse": "train",
    "h5py": "hdf5", "dask": "dask", "distributed": "dask", "dask_image": "dask",
    "sklearn": "bench",
}
"""Modules of optional extras, and the extra that installs each."""


def missing_module_message(e: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs a missing module (``None``: not an extra's).

    Examples
    --------
    >>> missing_module_message(ModuleNotFoundError("x", name="h5py.foo"))
    "this needs h5py, which is not installed: pip install 'crackseg[hdf5]'"
    """
    root = (e.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(root)
    if extra is None:
        return None
    return f"this needs {root}, which is not installed: pip install 'crackseg[{extra}]'"


def build_parser() -> argparse.ArgumentParser:
    """Parser with every subcommand found in :mod:`crackseg.commands`."""
    import crackseg.commands as commands

    parser = argparse.ArgumentParser(
        prog="crackseg",
        description="Segment particles, cracks and pores in electrode tomograms and "
        "report the damage distribution with honest uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"crackseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"crackseg.commands.{info.name}")
        module.register(sub)
    return parser


def _run(name: str, fn) -> int:
    """Run one subcommand; user errors and missing extras become one-line messages."""
    try:
        status = int(fn() or 0)
        sys.stdout.flush()
        return status
    except CracksegError as e:
        print(f"crackseg {name}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as e:
        msg = missing_module_message(e)
        if msg is None:
            raise
        print(f"crackseg {name}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"crackseg {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``crackseg info M | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Training uses LightningCLI, which parses its own arguments.
    if argv and argv[0] == "train":
        from crackseg.commands.train import run_lightning_cli

        return _run("train", lambda: run_lightning_cli(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USER_ERROR
    return _run(args.command, lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
