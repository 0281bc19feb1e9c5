"""The README's command table is the CLI's: every command it names exists with the options
it lists, and every registered command and option is in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from featureledger.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
# every command takes these; the README says so once, under the table
COMMON = {"--repo", "--json", "--help"}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def readme_table() -> dict[str, set[str]]:
    """{command: options} from the first table under '## The CLI'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The CLI\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`").strip()
        assert name not in rows, f"README lists {name!r} twice"
        rows[name] = set(OPTION.findall(cells[1]))
    assert rows, "no command table found under '## The CLI' in README.md"
    return rows


def cli_commands() -> dict[str, list[set[str]]]:
    """{command: one set of spellings per option (``--with-data``, ``--no-data``)} of the
    registered CLI; the root group is ``featureledger``."""
    root = typer.main.get_command(app)
    out: dict[str, list[set[str]]] = {}

    def options(cmd, skip: set[str]) -> list[set[str]]:
        found = []
        for p in cmd.params:
            names = {o for o in [*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())]
                     if o.startswith("--")}
            if p.param_type_name == "option" and not names & skip:
                found.append(names)
        return found

    out["featureledger"] = options(root, {"--help"})

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            full = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, full)
            else:
                out[full] = options(cmd, COMMON)

    walk(root, "")
    return out


def test_every_readme_command_exists_with_its_options() -> None:
    cli = cli_commands()
    for name, documented in readme_table().items():
        assert name in cli, (f"README.md lists `{name}`, which is not a command; the "
                             f"commands are: {', '.join(sorted(cli))}")
        unknown = documented - set().union(*cli[name])
        assert not unknown, f"README.md gives `{name}` options it does not take: {unknown}"


def test_every_command_and_option_is_in_the_readme() -> None:
    documented = readme_table()
    for name, options in cli_commands().items():
        listed = " ".join(f"`{max(o, key=len)}`" for o in options)
        assert name in documented, (
            f"`featureledger {name}` is not in README.md's command table (under '## The "
            f"CLI'); add a row: | `{name}` | ARGS {listed} | what it does |")
        for spellings in options:
            assert documented[name] & spellings, (
                f"README.md's row for `{name}` does not list its option "
                f"{' / '.join(sorted(spellings))}")


def test_the_table_parser_sees_rows_and_options() -> None:
    table = readme_table()
    assert table["ingest"] >= {"--mode", "--duplicates", "--map", "--filter", "--run-id"}
    assert table["deploy"] >= {"--list", "--undeploy"}
    assert "datasets reproduce" not in table and "reproduce" in table
