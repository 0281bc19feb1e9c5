"""A view's quality policy: what every ingestion and push flush into it is checked for.

>>> p = QualityPolicy.from_dict({"on_drift": "quarantine", "features": {"fare": {"psi": 0.3}}})
>>> p.thresholds_for("fare").psi, p.thresholds_for("trips").psi
(0.3, 0.2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from featureledger.errors import QualityError
from featureledger.quality.drift import Thresholds

ACTIONS = ("none", "alert", "quarantine")


@dataclass(frozen=True)
class QualityPolicy:
    """Drift checking and automatic quarantine for one view."""

    baseline: str = "previous"
    """The baseline each new commit is compared with (see quality/baselines.py)."""
    on_drift: str = "alert"
    """What a drifted commit gets: ``none`` (recorded only), ``alert`` or ``quarantine``."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """Thresholds of every feature without its own."""
    features: dict[str, Thresholds] = field(default_factory=dict)
    """Per-feature thresholds."""
    max_rejected_fraction: float | None = None
    """Share of rows failing validation above which the commit is quarantined."""
    exact: bool = False
    """Compute drift from the rows (through the offline engine), not from profiles."""
    min_rows: int = 1
    """Commits with fewer valid rows are recorded as ``skipped``, never judged."""

    def thresholds_for(self, feature: str) -> Thresholds:
        return self.features.get(feature, self.thresholds)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityPolicy:
        known = {"baseline", "on_drift", "thresholds", "features", "max_rejected_fraction",
                 "exact", "min_rows"}
        bad = sorted(set(d) - known)
        if bad:
            raise QualityError(f"unknown quality policy key(s) {bad}; use {sorted(known)}")
        on_drift = str(d.get("on_drift", "alert"))
        if on_drift not in ACTIONS:
            raise QualityError(f"on_drift {on_drift!r} is not known; use one of {ACTIONS}")
        base = Thresholds().with_overrides(d.get("thresholds"))
        feats = {str(k): base.with_overrides(v) for k, v in (d.get("features") or {}).items()}
        frac = d.get("max_rejected_fraction")
        if frac is not None and not (0 <= float(frac) <= 1):
            raise QualityError("max_rejected_fraction must be between 0 and 1")
        spec = str(d.get("baseline", "previous"))
        from featureledger.quality.baselines import KINDS

        if spec.partition(":")[0] not in KINDS:
            raise QualityError(f"baseline {spec!r} is not known; use one of {KINDS}")
        return cls(spec, on_drift, base, feats,
                   float(frac) if frac is not None else None, bool(d.get("exact", False)),
                   int(d.get("min_rows", 1)))

    def to_dict(self) -> dict[str, Any]:
        base = self.thresholds.to_dict()
        return {
            "baseline": self.baseline, "on_drift": self.on_drift, "thresholds": base,
            "features": {k: {n: v for n, v in t.to_dict().items() if v != base[n]}
                         for k, t in self.features.items()},
            "max_rejected_fraction": self.max_rejected_fraction, "exact": self.exact,
            "min_rows": self.min_rows,
        }
