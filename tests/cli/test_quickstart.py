"""The newcomer's path: the README's quickstart, copied out of the README of a clean copy of
the repository (``git archive HEAD``), runs there and prints what the README shows.

The install step is the one thing not re-run: the README's ``make install`` builds the
.venv these tests already run in, so its interpreter is used, with the clean copy's
``src`` first on the path (the commands run the copy's code, templates and README).
Ids, times and durations differ on every run and are compared by their form.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = "cmt|ds|run|mdl|dep|exp|seg"
# what differs from run to run, and the form it must have
VARIABLE = [
    (rf"\b(?:{PREFIXES})_[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}",
     lambda m: re.escape(m.group(0)[:m.group(0).index("_") + 1]) + r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"),
    (rf"\b(?:{PREFIXES})_…[0-9a-f]{{8}}",
     lambda m: re.escape(m.group(0)[:m.group(0).index("_") + 1]) + r"…[0-9a-f]{8}"),
    (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\+00:00)?",
     lambda m: r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\+00:00)?"),
    (r"\b\d+\.\d+s\b", lambda m: r"\d+\.\d+s"),
    (r"─+", lambda m: "─+"),
]
TOKEN = re.compile("|".join(f"({p})" for p, _ in VARIABLE))


def line_pattern(expected: str) -> re.Pattern[str]:
    """A README output line as a pattern: its variable parts by their form, the rest as
    written (trailing spaces aside)."""
    out, pos = [], 0
    for m in TOKEN.finditer(expected):
        out.append(re.escape(expected[pos:m.start()]))
        which = next(i for i, g in enumerate(m.groups()) if g is not None)
        out.append(VARIABLE[which][1](m))
        pos = m.end()
    out.append(re.escape(expected[pos:].rstrip()))
    return re.compile("".join(out))


def quickstart(readme: Path) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) from the ```console block of the
    README's Quickstart section."""
    section = readme.read_text(encoding="utf-8").split("\n## Quickstart\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, "README.md's Quickstart has no ```console block"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def check_output(command: str, expected: list[str], actual: str) -> None:
    """Every shown line (``...`` stands for lines left out) appears, in order, in what the
    command printed."""
    lines = [line.rstrip() for line in actual.splitlines()]
    i = 0
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = line_pattern(want)
        while i < len(lines) and not pattern.fullmatch(lines[i]):
            i += 1
        assert i < len(lines), (f"`{command}` did not print the README's line\n  {want}\n"
                                f"in order; it printed:\n{actual}")
        i += 1


def clean_copy(dest: Path) -> Path:
    """The committed tree of this repository at ``dest`` (what a clone checks out)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no clean copy to make")
    archive = dest.parent / "head.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_the_parser_reads_commands_and_output() -> None:
    steps = quickstart(ROOT / "README.md")
    commands = [c for c, _ in steps]
    assert commands[0].startswith("make install") and "cd demo-repo" in commands
    ingest = dict(steps)["featureledger ingest driver_stats data/driver_stats.parquet"]
    assert line_pattern(ingest[0]).fullmatch(
        "committed cmt_01a2531d-9f89-737c-9e91-4d76e0045b16 to driver_stats@1")
    assert not line_pattern(ingest[0]).fullmatch("committed cmt_01a2531d to driver_stats@1")
    with pytest.raises(AssertionError, match="did not print"):
        check_output("x", ["  8400 rows, 0 rejected"], "  8399 rows, 0 rejected\n")


@pytest.mark.slow
@pytest.mark.e2e
def test_the_readme_quickstart_runs_in_a_clean_copy(tmp_path: Path) -> None:
    clone = clean_copy(tmp_path / "featureledger")
    work = clone  # the quickstart starts in the repository's folder
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "COLUMNS": "80", "FEATURELEDGER_USER": "newcomer",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(clone / "src")}
    env.pop("FEATURELEDGER_REPO", None)
    env.pop("FEATURELEDGER_FULL_IDS", None)
    where = subprocess.run([sys.executable, "-c", "import featureledger; "
                            "print(featureledger.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(clone / "src"), where

    steps = quickstart(clone / "README.md")
    assert any(c.startswith("featureledger") for c, _ in steps)
    for command, expected in steps:
        printed = []
        for part in (p.strip() for p in command.split("&&")):
            words = shlex.split(part)
            if words[:2] == ["make", "install"]:
                # the .venv this test runs in is that install: the target must exist
                assert re.search(r"^install:", (clone / "Makefile").read_text(), re.M)
                continue
            if words[0] in (".", "source") and words[-1].endswith("bin/activate"):
                continue  # PATH already leads to the .venv's bin
            if words[0] == "cd":
                work = work / words[1]
                assert work.is_dir(), f"`{part}`: no folder {work}"
                continue
            proc = subprocess.run(["bash", "-c", part], cwd=work, env=env,
                                  capture_output=True, text=True, encoding="utf-8",
                                  timeout=300)
            assert proc.returncode == 0, (f"`{part}` exited {proc.returncode}:\n"
                                          f"{proc.stdout}\n{proc.stderr}")
            printed.append(proc.stdout + proc.stderr)
        check_output(command, expected, "".join(printed))
