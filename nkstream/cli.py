"""`nkstream` command line.

One module per subcommand in nkstream/commands/, each with `add_parser(subparsers)`
returning its parser and `run(args) -> int`.  Exit codes (DESIGN.md): 0 success,
2 bad usage (argparse), 1 runtime error with a one-line message on stderr.
"""
import argparse
import importlib
import os
import sys

from . import __version__

# The command never multiplies matrices, but OpenBLAS (numpy's) starts a thread per
# core at import and they spin after any BLAS call: on a sensor they would take
# cycles from the workers, in `nkstream bench` from the measurement.  One thread,
# unless the user asked for more; set before numpy is first imported (the
# subcommands import it).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# (subcommand, module) in the order `nkstream --help` lists them.
COMMANDS = [
    ("classify", "nkstream.commands.classify"),
    ("decode", "nkstream.commands.decode"),
    ("lookup", "nkstream.commands.lookup"),
    ("report", "nkstream.commands.report"),
    ("run", "nkstream.commands.run"),
    ("ifaces", "nkstream.commands.ifaces"),
    ("bench", "nkstream.commands.bench"),
    ("verify", "nkstream.commands.verify"),
]


def nonneg_int(text):
    """argparse type: an integer >= 0 (--limit, --sample ...)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


class UserError(Exception):
    """A runtime error to report as one line on stderr with exit status 1."""


def _runtime_errors():
    """Exceptions that are reported as one line (exit 1) rather than a traceback."""
    errs = [UserError, OSError, ValueError]
    try:
        from .capture import CaptureError
        errs.append(CaptureError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nkstream",
        description="Streaming packet classifier: who watched networks talk to, and how.",
    )
    parser.add_argument("--version", action="version", version=f"nkstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, modname in COMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # subcommand not part of this build
                continue
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `nkstream decode big.pcap | head`: the reader went away; not an error.
        try:
            sys.stdout = None
        except Exception:
            pass
        return 0
    except Exception as exc:
        if not isinstance(exc, _runtime_errors()):
            raise
        msg = str(exc) or exc.__class__.__name__
        print(f"nkstream {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
