"""The command line's options against a golden copy: the parser is built by one function
per subcommand, and this keeps every subcommand's options (order, flags, defaults, help,
exclusive groups) what they were when it was one function, so no ``--help`` drifts unseen.

After a deliberate change to the options, rewrite the golden file with
``python tests/test_cli_parser.py > tests/golden/cli_options.json`` and review its diff.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from recorder.cli import _parser

GOLDEN = Path(__file__).parent / "golden" / "cli_options.json"


def _options(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    groups = {
        id(action): i
        for i, group in enumerate(parser._mutually_exclusive_groups)
        for action in group._group_actions
    }
    return [
        {
            "flags": a.option_strings or [a.dest],
            "dest": a.dest,
            "default": a.default,
            "required": a.required,
            "help": a.help,
            "metavar": a.metavar,
            "nargs": a.nargs,
            "type": getattr(a.type, "__name__", None),
            "action": type(a).__name__,
            "exclusive_group": groups.get(id(a)),
        }
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
    ]


def describe() -> dict[str, Any]:
    """Everything the parser's ``--help`` texts are made of, as JSON values."""
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    commands = [
        {
            "name": name,
            "help": helps[name],
            "func": command._defaults["func"].__name__,
            "options": _options(command),
        }
        for name, command in sub.choices.items()
    ]
    described = {
        "prog": parser.prog,
        "description": parser.description,
        "epilog": parser.epilog,
        "commands": commands,
    }
    return dict(json.loads(json.dumps(described, default=str)))


def test_every_subcommand_keeps_its_options_in_order() -> None:
    golden = json.loads(GOLDEN.read_text())
    now = describe()
    assert [c["name"] for c in now["commands"]] == [c["name"] for c in golden["commands"]]
    for mine, kept in zip(now["commands"], golden["commands"], strict=True):
        assert mine == kept, mine["name"]
    assert now == golden


def test_the_help_of_every_subcommand_renders_from_those_options() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert parser.format_help().count("\n") > 10
    for name, command in sub.choices.items():
        text = command.format_help()
        assert text.startswith(f"usage: qos-recorder {name}"), name
        for option in _flags(command):
            assert option in text, (name, option)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for a in parser._actions for flag in a.option_strings]


if __name__ == "__main__":
    print(json.dumps(describe(), indent=1))
