"""The CLI teaches: ``edge --help`` says what the product does and where configs live, every command has an
example, and no option or argument is left without help (issue 18 item 10)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from edge.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_top_level_help_is_for_a_traffic_engineer() -> None:
    out = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", "--help"],
                         capture_output=True, text=True, check=True).stdout
    description = out.split("\n\n")[1]
    assert "traffic camera" in description and "Command line" not in description  # not the module docstring
    assert "config/*.yaml" in out and "first steps:" in out and "edge replay " in out
    for command in ("validate-config", "replay", "run", "attest", "clips", "analyse-trajectories", "models"):
        assert f"    {command}" in out


def test_every_command_has_an_example_and_every_argument_a_help_text() -> None:
    commands = _subparsers(build_parser())
    assert len(commands) >= 11  # 7 commands, clips keygen/decrypt, models list/fetch
    for name, sub in commands.items():
        if " " not in name:  # top-level commands carry an example
            assert sub.epilog and f"edge {name}" in sub.epilog, name
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"`edge {name}`: {'/'.join(action.option_strings) or action.dest} has no help"
