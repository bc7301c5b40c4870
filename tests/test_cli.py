"""The crackseg command: version, help for every subcommand, one-line user errors."""

import subprocess
import sys

from crackseg import __version__
from crackseg.cli import build_parser, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "crackseg", *args], capture_output=True,
                          text=True, timeout=120)


def test_version():
    r = _run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_subcommand_has_help(capsys):
    names = _subcommands()
    assert names, "no subcommands registered"
    for name in names:
        try:
            status = main([name, "--help"])
        except SystemExit as e:
            status = e.code
        assert status == 0, name
        out = capsys.readouterr().out
        assert out.startswith("usage: crackseg " + name), (name, out[:200])


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) != 0
    assert "usage: crackseg" in capsys.readouterr().out
