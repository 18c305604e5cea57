"""Every `autoslim` command line the README shows names a real command and only options that command takes."""

import re
import shlex
from pathlib import Path

import click

from cli.main import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines():
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            found = re.search(r"(?:^|\S*/|\$\(which )autoslim\)? (.*)", line)
            if found and not line.startswith("#"):
                yield line, shlex.split(found.group(1), comments=True)


def test_the_readme_commands_use_real_options():
    lines = list(_command_lines())
    assert len(lines) >= 15
    context = click.Context(cli)
    for line, words in lines:
        command = cli.get_command(context, words[0])
        assert command is not None, f"unknown command in the README: {line}"
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = {word.split("=")[0] for word in words[1:] if word.startswith("-") and not word[1:2].isdigit()}
        assert used <= options, f"{line}: {sorted(used - options)} are not options of `autoslim {words[0]}`"
