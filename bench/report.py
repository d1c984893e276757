"""What a section hands back (tables, target verdicts, notes, the commands behind the figures) and its Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"**{self.caption}**", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows)
        return "\n".join(lines)


@dataclass
class Section:
    number: int
    title: str
    tables: list[Table] = field(default_factory=list)
    targets: list[tuple[str, bool | None, str]] = field(default_factory=list)  # (target, met, the figures)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def target(self, text: str, met: bool | None, figures: str) -> None:
        self.targets.append((text, met, figures))

    def command(self, text: str) -> None:
        if text not in self.commands:
            self.commands.append(text)

    def markdown(self) -> str:
        parts = [f"## {self.number}. {self.title}", ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        if self.targets:
            parts.append("Targets:")
            parts.append("")
            for text, met, figures in self.targets:
                verdict = "not measured" if met is None else ("MET" if met else "MISSED")
                parts.append(f"- **{verdict}**: {text} ({figures})")
            parts.append("")
        if self.notes:
            parts += [f"- {note}" for note in self.notes]
            parts.append("")
        if self.commands:
            parts += ["Commands behind these figures:", "", "```"]
            parts += self.commands
            parts += ["```", ""]
        parts.append(f"_Section time: {self.seconds:.0f} s._")
        return "\n".join(parts) + "\n"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
