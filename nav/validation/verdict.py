"""The limits a validation engineer sets, and each one's verdict on a session's figures.

A limits file (TOML) lists bounds on named metrics of ``report.json`` (its ``metrics``
table, flat dotted names)::

    [[limit]]
    metric = "registration.true_tre_mm.max"   # measured TRE at the worst target
    max = 2.0
    label = "TRE <= 2 mm at every target"     # optional: the line the report prints

Each limit has ``metric`` and at least one of ``max`` / ``min`` (inclusive). A verdict is
PASS, FAIL, or NO_DATA when the session has no such figure (no ground truth, no headset):
a session passes only when every limit passes, so a missing measurement never reads as a
pass. A bad file is one line naming the limit and the problem.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

MAX_LIMITS = 256
_KEYS = frozenset({"metric", "max", "min", "label"})


class LimitsError(ValueError):
    """A limits file that cannot be used; ``str`` is one line."""


class Outcome(Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True)
class Limit:
    metric: str
    max: float | None = None
    min: float | None = None
    label: str = ""

    @property
    def text(self) -> str:
        """The line a person reads: the label, else the bound written out."""
        if self.label:
            return self.label
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(bounds)}"


@dataclass(frozen=True)
class Verdict:
    limit: Limit
    value: float | None
    outcome: Outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.limit.metric,
            "label": self.limit.text,
            "min": self.limit.min,
            "max": self.limit.max,
            "value": self.value,
            "outcome": self.outcome.value,
        }


def _bound(entry: Mapping[str, Any], key: str, where: str) -> float | None:
    if key not in entry:
        return None
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LimitsError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def parse_limits(document: Mapping[str, Any], source: str = "limits") -> tuple[Limit, ...]:
    """The limits of a parsed TOML document (``[[limit]]`` tables)."""
    unknown = set(document) - {"limit"}
    if unknown:
        raise LimitsError(f"{source}: unknown table(s) {sorted(unknown)}; expected [[limit]]")
    entries = document.get("limit", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LimitsError(f"{source}: 'limit' must be an array of tables ([[limit]])")
    if len(entries) > MAX_LIMITS:
        raise LimitsError(f"{source}: {len(entries)} limits, at most {MAX_LIMITS}")
    limits = []
    for n, entry in enumerate(entries, start=1):
        where = f"{source}: limit {n}"
        extra = set(entry) - _KEYS
        if extra:
            raise LimitsError(f"{where}: unknown key(s) {sorted(extra)}")
        metric = entry.get("metric")
        if not isinstance(metric, str) or not metric.strip():
            raise LimitsError(f'{where}: needs metric = "<name in report.json metrics>"')
        low, high = _bound(entry, "min", where), _bound(entry, "max", where)
        if low is None and high is None:
            raise LimitsError(f"{where} ({metric}): needs max, min or both")
        if low is not None and high is not None and low > high:
            raise LimitsError(f"{where} ({metric}): min {low:g} > max {high:g}")
        label = entry.get("label", "")
        if not isinstance(label, str):
            raise LimitsError(f"{where}: label must be text")
        limits.append(Limit(metric.strip(), high, low, label.strip()))
    return tuple(limits)


def read_limits(path: str | Path) -> tuple[Limit, ...]:
    """Read and check a limits file; ``LimitsError`` with one line on any problem."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise LimitsError(f"{path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise LimitsError(f"{path}: not TOML: {error}") from None
    return parse_limits(document, str(path))


def judge(limits: tuple[Limit, ...], metrics: Mapping[str, float | None]) -> list[Verdict]:
    """Each limit's verdict on ``metrics`` (None or absent: NO_DATA)."""
    verdicts = []
    for limit in limits:
        value = metrics.get(limit.metric)
        if value is None or not math.isfinite(value):
            verdicts.append(Verdict(limit, None, Outcome.NO_DATA))
            continue
        ok = (limit.min is None or value >= limit.min) and (limit.max is None or value <= limit.max)
        verdicts.append(Verdict(limit, float(value), Outcome.PASS if ok else Outcome.FAIL))
    return verdicts


def overall(verdicts: list[Verdict]) -> Outcome | None:
    """FAIL if any fails, NO_DATA if any lacks data, PASS if all pass; None without limits."""
    if not verdicts:
        return None
    outcomes = {v.outcome for v in verdicts}
    for outcome in (Outcome.FAIL, Outcome.NO_DATA):
        if outcome in outcomes:
            return outcome
    return Outcome.PASS
