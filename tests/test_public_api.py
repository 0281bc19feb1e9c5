from __future__ import annotations

import subprocess
import sys

import featureledger
from featureledger import errors


def test_all_is_sorted_and_importable() -> None:
    assert featureledger.__all__ == sorted(featureledger.__all__)
    for name in featureledger.__all__:
        assert getattr(featureledger, name) is not None


def test_every_error_derives_from_the_root_and_has_a_code() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    everything = [getattr(errors, n) for n in errors.__all__]
    # warnings are warnings, not errors: each says what is suspicious, none is raised
    warns = [c for c in everything if issubclass(c, Warning)]
    assert [c.__name__ for c in warns] == ["DeprecatedFeatureWarning", "FeatureDataWarning",
                                           "FeatureLedgerWarning"]
    assert not any(issubclass(c, errors.FeatureLedgerError) for c in warns)
    classes = [c for c in everything if c not in warns]
    codes = set()
    for cls in classes:
        assert issubclass(cls, errors.FeatureLedgerError)
        assert cls.__name__.endswith("Error")
        codes.add(cls.code)
    assert len(codes) == len(classes)
    e = errors.UnknownViewError("unknown feature view 'x'; apply it first")
    assert isinstance(e, KeyError) and str(e) == "unknown feature view 'x'; apply it first"


def test_import_is_light() -> None:
    # importing the package must not pull in heavy or optional backends
    code = ("import sys, featureledger; "
            "heavy = [m for m in ('duckdb', 'pyarrow', 'redis', 'fastapi', 'mlflow', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
