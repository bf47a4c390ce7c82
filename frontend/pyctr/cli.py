"""The `pyctr` command line: a thin layer that parses options into a ContainerSpec."""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import PyctrError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyctr")
def cli() -> None:
    """Rootless Linux containers with real kernel networking."""


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except PyctrError as e:
        click.echo(f"pyctr: {e}", err=True)
        sys.exit(e.exit_code)
