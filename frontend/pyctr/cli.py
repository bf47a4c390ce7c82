"""The `pyctr` command line: a thin layer that parses options into a ContainerSpec.

`pyctr run` has its own small parser (run_options.py) and is dispatched before click is
imported: its start time is a benchmark target and click alone costs ~20 ms.
"""

from __future__ import annotations

import os
import sys

from .errors import PyctrError


def _run(argv: list[str]) -> int:
    from . import launcher, run_options

    try:
        raw = run_options.parse_argv(argv)
    except run_options.HelpRequested:
        print(run_options.HELP, end="")
        return 0
    spec = run_options.build_spec(raw, _default_network_mode)
    return launcher.run(spec)


def _default_network_mode() -> str:
    from . import network  # only when --network is not given

    return network.default_mode()


def _click_main() -> None:
    import click

    from . import __version__, run_options, state
    from .errors import UsageError

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="pyctr")
    def cli() -> None:
        """Rootless Linux containers with real kernel networking."""

    @cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                   "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def run(args: tuple[str, ...]) -> None:
        """Run a command in a new container (see `pyctr run --help`)."""
        sys.exit(_run(list(args)))

    @cli.command(name="ps")
    def ps() -> None:
        """List the containers whose state is kept (run without --rm)."""
        for cid, status in state.list_containers():
            click.echo(f"{cid[:12]}  {status}")

    @cli.command(name="rm")
    @click.option("--all", "-a", "everything", is_flag=True, help="remove every exited container")
    @click.argument("ids", nargs=-1)
    def rm(everything: bool, ids: tuple[str, ...]) -> None:
        """Remove exited containers' state (files owned by subordinate ids included)."""
        known = dict(state.list_containers())
        chosen = set(known) if everything else set()
        for prefix in ids:
            matches = [cid for cid in known if cid.startswith(prefix)]
            if len(matches) != 1:
                raise UsageError(f"{prefix!r} names {len(matches) or 'no'} containers")
            chosen.add(matches[0])
        running = [cid[:12] for cid in chosen if known[cid] == "running"]
        if running:
            raise UsageError(f"still running: {', '.join(running)}")
        uid_map, gid_map = run_options.default_maps()
        for cid in sorted(chosen):
            state.remove_tree(os.path.join(state.containers_dir(), cid), uid_map, gid_map)
            click.echo(cid[:12])

    cli.main(standalone_mode=True)


def main() -> None:
    argv = sys.argv[1:]
    try:
        if argv and argv[0] == "run":
            code = _run(argv[1:])
            # Everything is cleaned up by now: skip the interpreter's teardown (a few ms).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _click_main()
    except PyctrError as e:
        print(f"pyctr: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        # Something the checks did not foresee: still one line and docker's 125, not a
        # traceback (PYCTR_DEBUG=1 shows it).
        if os.environ.get("PYCTR_DEBUG"):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pyctr: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(125)
