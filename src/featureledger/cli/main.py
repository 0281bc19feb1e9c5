"""``featureledger``: the command line (typer + rich).

Commands live in one module per part (``cli/<part>_cmds.py``), each with a
``register(app)`` function, listed in :data:`COMMAND_MODULES`. Errors exit non-zero with
one clear message; ``--debug`` shows the traceback.

Start-up is part of every command's time, so a command module imports at its top only
typer and ``featureledger.cli.common`` (and light standard-library modules); everything
else (the store, pyarrow, DuckDB, SQLAlchemy, pandas, rich tables) inside the command
function that uses it. ``tests/cli/test_startup.py`` holds every module of
:data:`COMMAND_MODULES` to that, and ``bench/cli.py`` measures the result.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys

import typer

from featureledger.cli.common import err_console, print_error, settings

# Modules that add commands, in help order.
COMMAND_MODULES = [
    "featureledger.cli.definitions_cmds",
    "featureledger.cli.data_cmds",
    "featureledger.cli.derive_cmds",
    "featureledger.cli.tracking_cmds",
    "featureledger.cli.retrieval_cmds",
    "featureledger.cli.online_cmds",
    "featureledger.cli.lifecycle_cmds",
    "featureledger.cli.audit_cmds",
    "featureledger.cli.governance_cmds",
    "featureledger.cli.quality_cmds",
]

app = typer.Typer(
    name="featureledger",
    help="A feature store with experiment tracking and model lineage built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from featureledger import __version__

        print(f"featureledger {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    repo: str = typer.Option(None, "--repo", "-r",
                             help="Feature repository folder for every command."),
    full_ids: bool = typer.Option(
        False, "--full-ids", envvar="FEATURELEDGER_FULL_IDS",
        help="Print ids and hashes whole in tables (they are shortened to fit 80 columns; "
             "--json always has them whole)."),
    version: bool = typer.Option(False, "--version", callback=_print_version,
                                 is_eager=True, help="Print the version and exit."),
    principal: str = typer.Option(
        None, "--principal", help="Act as this principal of the access policy (default: "
        "FEATURELEDGER_PRINCIPAL, else the OS user)."),
) -> None:
    _state["debug"] = debug
    settings["full_ids"] = full_ids
    if principal:
        # the store reads its principal from this variable (registry/actor.py)
        os.environ["FEATURELEDGER_PRINCIPAL"] = principal
    if repo:
        # commands read their --repo option from this variable when it is not given
        os.environ["FEATURELEDGER_REPO"] = repo


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status.

    A FeatureLedgerError is the library saying what went wrong (exit 2, 3 for failed
    validation); an OSError or MemoryError is the machine (a full disk, a file that cannot
    be opened), reported as such (exit 2). Only what remains is a bug and prints
    "internal error".
    """
    args = sys.argv[1:] if argv is None else argv
    # --repo and --principal reach the commands through the environment; a call in a
    # longer-lived process (tests, notebooks) must not leave them set for what runs next
    saved = {k: os.environ.get(k) for k in ("FEATURELEDGER_REPO", "FEATURELEDGER_PRINCIPAL")}
    try:
        return _run(args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(args: list[str]) -> int:
    from featureledger.errors import FeatureLedgerError

    debug = "--debug" in args
    try:
        rc = app(args=args, standalone_mode=False)  # returns the code of typer.Exit
        if isinstance(rc, int) and rc:
            return rc
    except FeatureLedgerError as exc:
        if debug:
            raise
        # the message may quote data: cut and escaped, never read as markup
        _error(exc.code, str(exc))
        return 2 if exc.code != "validation_failed" else 3
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`featureledger commits | head`): not an error
        # worth a message, and printing one would fail the same way
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
        return 141
    except OSError as exc:
        if debug:
            raise
        _error(*_os_message(exc))
        return 2
    except MemoryError:
        if debug:
            raise
        _error("out_of_memory", "the command ran out of memory; give it more memory, or "
               "work on less data at a time (fewer rows per ingest, a shorter time range)")
        return 2
    except Exception as exc:
        # usage errors (typer ships its own click: recognise them by their interface)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        if debug:
            raise
        print_error("internal error", f"{type(exc).__name__}: {exc}")
        err_console.print("Run again with --debug for the traceback, and please report it.")
        return 1
    return 0


def _error(code: str, message: str) -> None:
    print_error(f"error ({code})", message)


def _os_message(exc: OSError) -> tuple[str, str]:
    """(code, message) for an OSError that reached the command line untranslated."""
    where = f" ({exc.filename})" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full", (f"the disk is full{where}: {what}. Free space and retry; "
                             "commits are written atomically, so none was left half-written")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission_denied", f"permission denied{where}: {what}"
    if exc.errno == errno.ENOENT:
        return "not_found", f"no such file or folder{where}"
    return "os_error", f"{what}{where}"


if __name__ == "__main__":
    sys.exit(main())
