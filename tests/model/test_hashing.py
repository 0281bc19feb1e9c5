"""Definition hashes are the same in every process, whatever PYTHONHASHSEED says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from featureledger.model.hashing import canonical_json, content_hash

SCRIPT = """
import json, sys
from featureledger.cli.scaffold import TEMPLATE
from featureledger.project import load_definitions
defs = load_definitions(TEMPLATE)
print(json.dumps({f"{d.kind}:{d.name}": d.definition_hash for d in defs}, sort_keys=True))
"""


def _hashes(seed: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_demo_hashes_identical_across_processes_and_hash_seeds() -> None:
    a, b = _hashes("1"), _hashes("4242")
    assert a == b
    assert len(a) == 5 and all(len(h) == 64 for h in a.values())


def test_demo_hashes_match_this_process() -> None:
    from featureledger.cli.scaffold import TEMPLATE
    from featureledger.project import load_definitions

    here = {f"{d.kind}:{d.name}": d.definition_hash for d in load_definitions(TEMPLATE)}
    assert here == _hashes("0")


def test_canonical_json_ignores_dict_order_and_normalises_numbers() -> None:
    assert canonical_json({"b": [1, 2.0], "a": {"y": 1, "x": None}}) == (
        '{"a":{"x":null,"y":1},"b":[1,2]}'
    )
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
