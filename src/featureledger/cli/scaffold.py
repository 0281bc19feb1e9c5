"""``featureledger init``: copy the demo repository template and generate its data."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from featureledger.errors import StateError

TEMPLATE = Path(__file__).parent / "templates" / "demo"


def scaffold(path: Path, *, force: bool = False, with_data: bool = True,
             data_end: str | None = None) -> list[str]:
    """Create a demo feature repository at ``path``; return the files written.

    ``data_end`` (ISO date or ``today``) ends the 7 days of sample data; the default is a
    fixed date, so the files are the same on every machine.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not force:
        raise StateError(f"{path} exists and is not empty; choose another folder or pass --force")
    written = []
    for src in sorted(TEMPLATE.rglob("*")):
        if src.is_dir() or "__pycache__" in src.parts:
            continue
        rel = src.relative_to(TEMPLATE)
        dst = path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(str(rel))
    if with_data:
        gen = runpy.run_path(str(path / "data" / "generate.py"))
        for p in gen["main"](path / "data", gen["parse_end"](data_end)):
            written.append(str(Path(p).relative_to(path)))
    return written
