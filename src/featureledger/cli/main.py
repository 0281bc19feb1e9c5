"""``featureledger``: the command line (typer + rich).

Commands live in one module per part (``cli/<part>_cmds.py``), each with a
``register(app)`` function. Errors exit non-zero with one clear message; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from featureledger.cli.common import err_console, show_message

# Modules that add commands, in help order.
COMMAND_MODULES = [
    "featureledger.cli.definitions_cmds",
    "featureledger.cli.data_cmds",
    "featureledger.cli.tracking_cmds",
    "featureledger.cli.retrieval_cmds",
    "featureledger.cli.online_cmds",
]

app = typer.Typer(
    name="featureledger",
    help="A feature store with experiment tracking and model lineage built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    repo: str = typer.Option(None, "--repo", "-r",
                             help="Feature repository folder for every command."),
) -> None:
    _state["debug"] = debug
    if repo:
        # commands read their --repo option from this variable when it is not given
        os.environ["FEATURELEDGER_REPO"] = repo


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    from featureledger.errors import FeatureLedgerError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = app(args=args, standalone_mode=False)  # returns the code of typer.Exit
        if isinstance(rc, int) and rc:
            return rc
    except FeatureLedgerError as exc:
        if debug:
            raise
        # the message may quote data: cut and escaped, never read as markup
        err_console.print(f"[bold red]error[/] ({exc.code}): {show_message(str(exc))}",
                          markup=True, highlight=False, soft_wrap=True)
        return 2 if exc.code != "validation_failed" else 3
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except Exception as exc:
        # usage errors (typer ships its own click: recognise them by their interface)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        if debug:
            raise
        err_console.print(f"[bold red]internal error[/]: {type(exc).__name__}: "
                          f"{show_message(str(exc))}\n"
                          "Run again with --debug for the traceback, and please report it.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
