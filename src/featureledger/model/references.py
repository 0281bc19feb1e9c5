"""Feature references: ``view:feature`` (latest version) or ``view@3:feature`` (pinned).

>>> r = parse_reference("driver_stats@3:trips")
>>> (r.view, r.version, r.feature, r.output_name)
('driver_stats', 3, 'trips', 'driver_stats__trips')
>>> str(parse_reference("driver_stats:trips"))
'driver_stats:trips'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from featureledger.errors import InvalidReferenceError

MAX_VERSION = 2**31 - 1  # versions are stored as 32-bit integers
_REF_RE = re.compile(
    r"^(?P<view>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<version>[1-9][0-9]*))?:(?P<feature>[A-Za-z_][A-Za-z0-9_]*)$"
)


@dataclass(frozen=True, order=True)
class FeatureRef:
    view: str
    feature: str
    version: int | None = None

    def __str__(self) -> str:
        v = f"@{self.version}" if self.version is not None else ""
        return f"{self.view}{v}:{self.feature}"

    @property
    def output_name(self) -> str:
        """Column name in retrieval results: ``view__feature``."""
        return f"{self.view}__{self.feature}"

    def pinned(self, version: int) -> FeatureRef:
        return FeatureRef(self.view, self.feature, version)


def parse_reference(text: str | FeatureRef) -> FeatureRef:
    """Parse a feature reference, raising InvalidReferenceError with the expected form."""
    if isinstance(text, FeatureRef):
        return text
    if not isinstance(text, str):
        raise InvalidReferenceError(
            f"feature reference must be a string like 'driver_stats:trips', got {text!r}"
        )
    m = _REF_RE.match(text.strip())
    if not m:
        raise InvalidReferenceError(
            f"malformed feature reference {text!r}; expected 'view:feature' or "
            "'view@VERSION:feature' (e.g. 'driver_stats@3:trips')"
        )
    version = m.group("version")
    if version and int(version) > MAX_VERSION:
        raise InvalidReferenceError(
            f"feature reference {text!r} names version {version}, beyond any possible "
            f"version (at most {MAX_VERSION}); check the number"
        )
    return FeatureRef(m.group("view"), m.group("feature"), int(version) if version else None)


def parse_references(refs: list[str] | tuple[str, ...]) -> list[FeatureRef]:
    if isinstance(refs, str):
        raise InvalidReferenceError(
            f"expected a list of feature references, got the single string {refs!r}; "
            "wrap it in a list"
        )
    out = [parse_reference(r) for r in refs]
    # the same text twice is a mistake; 'v:f' beside 'v@2:f' may be two versions
    names = [str(r) for r in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidReferenceError(f"feature(s) requested twice: {', '.join(dupes)}")
    return out
