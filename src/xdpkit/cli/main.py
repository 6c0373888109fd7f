"""xdpkit command line: parses argv, calls the library, prints. No logic lives here."""
from __future__ import annotations

import argparse
import sys

from xdpkit.apps.firewall import cli as firewall_cli
from xdpkit.apps.lb import cli as lb_cli
from xdpkit.apps.forward import cli as forward_cli
from xdpkit.apps.afxdp import cli as afxdp_cli
from xdpkit.cli import agent_cmd, bench_cmd, commands, maps_cmd, observe_cmd, system_cmd, trafficgen_cmd
from xdpkit.errors import VerifierError, XdpkitError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2, one line plus usage
        self.print_usage(sys.stderr)
        print(f"xdpkit: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xdpkit", description="Compile, load, attach, inspect and test XDP programs.")
    p.add_argument("-v", "--verbose", action="store_true", help="show full logs (verifier, clang)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands.register(sub)
    maps_cmd.register(sub)
    system_cmd.register(sub)
    trafficgen_cmd.register(sub)
    bench_cmd.register(sub)
    firewall_cli.register(sub)
    lb_cli.register(sub)
    forward_cli.register(sub)
    afxdp_cli.register(sub)
    observe_cmd.register(sub)
    agent_cmd.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or EXIT_OK
    except VerifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.verbose:
            print(exc.log, file=sys.stderr)
        else:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    except XdpkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        diag = getattr(exc, "diagnostics", None)
        if args.verbose and diag:
            print(diag, file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        # a file the user named (an output path, a capture, a config) that cannot be used
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("xdpkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
