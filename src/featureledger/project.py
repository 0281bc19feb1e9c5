"""Feature repositories: the folder of definition files next to ``featureledger.yaml``.

Definitions are read from the folder's top-level Python modules (every module-level
Entity, FeatureView and FeatureSet) and YAML files (documents with a ``kind`` key, or a
``definitions:`` list). Files whose name starts with ``_`` or ``.`` are skipped, and so
are sub-folders (keep data and scripts there).
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from featureledger.config import CONFIG_FILE
from featureledger.errors import FeatureLedgerError, RepositoryLoadError
from featureledger.governance.policy import POLICY_FILE
from featureledger.model.definitions import (
    Definition,
    Entity,
    FeatureSet,
    FeatureView,
    definition_from_dict,
)

_DEFINITION_TYPES = (Entity, FeatureView, FeatureSet)


def definition_files(root: Path) -> list[Path]:
    files = []
    for p in sorted(root.iterdir()):
        if not p.is_file() or p.name.startswith(("_", ".")) or p.name in (CONFIG_FILE,
                                                                         POLICY_FILE):
            continue
        if p.suffix in (".py", ".yaml", ".yml"):
            files.append(p)
    return files


def load_python_definitions(path: Path) -> list[Definition]:
    name = f"_featureledger_repo_{abs(hash(str(path.absolute())))}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RepositoryLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except FeatureLedgerError as exc:
        raise RepositoryLoadError(f"{path}: {exc}") from None
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(tb) if f.filename == str(path)), None)
        where = f"{path}:{line}" if line else str(path)
        raise RepositoryLoadError(
            f"{where}: {type(exc).__name__}: {exc}. Fix the file and run the command again."
        ) from None
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop(name, None)
    found: list[Definition] = []
    for value in vars(module).values():
        if isinstance(value, _DEFINITION_TYPES):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, _DEFINITION_TYPES))
    return found


def load_yaml_definitions(path: Path) -> list[Definition]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise RepositoryLoadError(f"{path} is not valid YAML: {exc}") from None
    items: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and "definitions" in doc:
            items.extend(doc["definitions"])
        elif isinstance(doc, list):
            items.extend(doc)
        else:
            items.append(doc)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "kind" not in item:
            raise RepositoryLoadError(
                f"{path}: item {i + 1} needs a 'kind' (entity, feature_view or feature_set)"
            )
        try:
            out.append(definition_from_dict(item))
        except FeatureLedgerError as exc:
            raise RepositoryLoadError(f"{path}: item {i + 1}: {exc}") from None
    return out


def load_definitions(root: str | Path) -> list[Definition]:
    """Every definition in the feature repository at ``root``, de-duplicated."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryLoadError(f"feature repository {root} is not a folder")
    defs: dict[tuple[str, str], tuple[Definition, Path]] = {}
    for f in definition_files(root):
        loaded = load_python_definitions(f) if f.suffix == ".py" else load_yaml_definitions(f)
        for d in loaded:
            key = (d.kind, d.name)
            if key in defs and defs[key][0] != d:
                raise RepositoryLoadError(
                    f"{d.kind} {d.name!r} is defined differently in {defs[key][1].name} and "
                    f"{f.name}; keep one definition"
                )
            defs[key] = (d, f)
    return [d for d, _ in defs.values()]
