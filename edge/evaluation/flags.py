"""How often a model said "I cannot answer this well" on the evaluation images, for every task's
report (`edgecell eval`). Why: a model whose accuracy looks fine while it flags 30 % of a lab's
images as unfamiliar (or uncertain) is not fine, and accuracy alone hides that. Each evaluation
loop adds every `pipeline.predict` result to a `FlagTally`; the report entry carries
`tally.as_dict()` under "flags", and the printed summary and the Markdown read it from there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the result fields counted, in the order they are shown; a task's result that has no such field
#: (rbc: no unfamiliar check; cells: no uncertain flag) leaves it out of the report
FLAG_FIELDS = ("unfamiliar", "uncertain")


@dataclass
class FlagTally:
    """Images seen and, per flag the task's results carry, how many of them were flagged."""

    images: int = 0
    flagged: dict[str, int] = field(default_factory=dict)

    def add(self, result: Any) -> None:
        self.images += 1
        for name in FLAG_FIELDS:
            if hasattr(result, name):
                self.flagged[name] = self.flagged.get(name, 0) + int(bool(getattr(result, name)))

    def as_dict(self) -> dict:
        """{"images": M, "unfamiliar": N, "uncertain": K} (flags the results do not have left out)."""
        return {"images": self.images, **{k: self.flagged[k] for k in FLAG_FIELDS if k in self.flagged}}


def flag_lines(flags: dict | None) -> list[str]:
    """"flagged unfamiliar: N of M images (x %)" per flag of a report entry's "flags"."""
    if not flags:
        return []
    m = flags["images"]
    return [f"flagged {k}: {flags[k]} of {m} images ({100 * flags[k] / max(m, 1):.1f} %)"
            for k in FLAG_FIELDS if k in flags]


def flags_markdown(models: dict) -> list[str]:
    """A Markdown section: per model entry of a report, the share of images it flagged."""
    rows = [f"| {key} | " + "; ".join(flag_lines(e.get("flags")) or ["no flags in its results"]) + " |"
            for key, e in models.items()]
    return ["## Images the model flagged", "",
            "A flagged image has no trustworthy answer (a person must look); accuracy above counts it anyway.", "",
            "| model | flagged |", "|---|---|", *rows, ""]
