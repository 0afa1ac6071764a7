"""Figures, their targets (issue 6), the printed table and the JSON file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Target:
    """`kind`: "min_ratio" (ratio >= bound), "max" (value <= bound), "within" (|ratio-1| <=
    bound) or "info" (no target)."""

    kind: str
    bound: float = 0.0

    def text(self, unit: str) -> str:
        if self.kind == "min_ratio":
            return f">= {self.bound:g}x"
        if self.kind == "max":
            return f"<= {self.bound:g} {unit}"
        if self.kind == "within":
            return f"+-{self.bound * 100:g}%"
        return ""

    def check(self, value: float, ratio: float | None) -> bool | None:
        if self.kind == "min_ratio" and ratio is not None:
            return ratio >= self.bound
        if self.kind == "max":
            return value <= self.bound
        if self.kind == "within" and ratio is not None:
            return abs(ratio - 1) <= self.bound
        return None


INFO = Target("info")


@dataclass
class Figure:
    key: str
    figure: str
    value: float
    unit: str
    reference: float | None = None
    reference_text: str = ""
    target: Target = INFO
    passed: bool | None = field(init=False)
    ratio: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.value / self.reference if self.reference else None
        self.passed = self.target.check(self.value, self.ratio)


@dataclass
class Report:
    meta: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    not_measured: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def table(self) -> str:
        head = ("figure", "value", "reference", "ratio", "target", "result")
        rows = [head]
        for f in self.figures:
            rows.append(
                (
                    f.figure,
                    f"{_num(f.value)} {f.unit}",
                    f.reference_text or (_num(f.reference) if f.reference else ""),
                    f"{f.ratio:.2f}x" if f.ratio is not None else "",
                    f.target.text(f.unit),
                    {True: "PASS", False: "FAIL", None: ""}[f.passed],
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"not measured: {key}: {why}" for key, why in self.not_measured.items()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": [
                {**asdict(f), "target": f.target.text(f.unit) or None} for f in self.figures
            ],
            "not_measured": self.not_measured,
            "details": self.details,
        }

    def write(self, stamp: str, directory: Path = RESULTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, default=str) + "\n"
        path = directory / f"{stamp}.json"
        path.write_text(text)
        latest = directory / "latest.json"
        tmp = latest.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, latest)
        return path


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
