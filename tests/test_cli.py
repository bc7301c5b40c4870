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


def test_missing_optional_module_is_one_line_naming_the_extra(monkeypatch, capsys):
    import crackseg.commands.train as train

    def fail(argv):
        raise ModuleNotFoundError("No module named 'pytorch_lightning'", name="pytorch_lightning")

    monkeypatch.setattr(train, "run_lightning_cli", fail)
    assert main(["train", "fit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crackseg[train]" in err


def test_lightning_is_a_core_dependency():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    core = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert '"pytorch-lightning' in core and '"jsonargparse' in core


def test_closed_stdout_ends_quietly():
    # ``crackseg info --json | head -1``: the reader leaves early; no traceback.
    code = ("import sys; from crackseg.cli import main; sys.argv = ['crackseg', 'info', "
            "'nmc4-synthetic-v1', '--json']; sys.exit(main())")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err
    assert p.returncode in (0, 141)
