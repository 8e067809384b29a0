"""A record in plain words for a person at the bench or the cart: one headline, a few lines of
detail and a level that decides the colour. Written here (not in the page's script) so that the
page, the history and the tests read the same words, and a new task field needs one edit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# Levels, mildest first: the page colours them green, amber, red, red.
OK, CHECK, RETAKE, ERROR = "ok", "check", "retake", "error"


@dataclass
class Words:
    """What the page shows for one record: flags (what a person must act on, worst first) above
    the details."""

    headline: str
    level: str = OK
    details: list[str] = field(default_factory=list)
    figures: list[tuple[str, int]] = field(default_factory=list)  # counts, shown as large tiles
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def source_label(source: str) -> str:
    """'/data/run/smear.jpg' -> 'smear.jpg'; 'camera0#12' -> 'camera0 frame 12'."""
    base, _, index = source.partition("#")
    name = Path(base).name or base
    return f"{name} frame {index}" if index else name


def describe(record: dict) -> Words:
    """Headline, level and details for one `edgecell run` record (the JSONL line)."""
    if not record.get("ok", False):
        return Words("Could not read this image", ERROR, flags=[str(record.get("error") or "unknown error")])
    gate = record.get("gate")
    result = record.get("result")
    if result is None:
        reason = (gate or {}).get("reason", "the utility gate rejected it")
        return Words("Retake: image not usable", RETAKE, flags=[reason])
    words = _counts(result) if isinstance(result.get("counts"), dict) else _label(result)
    if gate is not None:
        if record.get("action") == "flagged":
            words.level = _worse(words.level, CHECK)
            words.flags.append(f"Image may be degraded (utility {gate['utility']:.2f} below "
                               f"{gate['threshold']:.2f}): check this result")
        else:
            words.details.append(f"Image quality gate: usable (utility {gate['utility']:.2f})")
    return words


def _counts(result: dict) -> Words:
    counts = result["counts"]
    headline = "   ".join(f"{name} {n}" for name, n in counts.items()) or "nothing found"
    details = [f"{result.get('total', sum(counts.values()))} found in total"]
    words = Words(headline, OK, details, [(str(name), int(n)) for name, n in counts.items()])
    _flags(result, words)
    return words


def _label(result: dict) -> Words:
    if "label" not in result:
        return Words("Result", OK, [str(result)[:200]])
    words = Words(f"{result['label']}  {100 * float(result.get('confidence', 0)):.0f} %", OK, [])
    others = result.get("probabilities") or {t["label"]: t["p"] for t in result.get("top", [])}
    rest = [f"{name} {100 * float(p):.0f} %" for name, p in others.items() if name != result["label"]]
    if rest:
        words.details.append("Others: " + ", ".join(rest))
    if result.get("gradcam"):
        words.details.append(f"Heatmap: where the model looked for {result['gradcam'].get('class') or result['label']}")
    _flags(result, words)
    return words


def _flags(result: dict, words: Words) -> None:
    """The flags a task may set on its result, each as one plain line, the most pressing first."""
    if result.get("retake"):
        words.level = _worse(words.level, RETAKE)
        words.flags.append("Retake the image: " + (result.get("message") or "quality check failed"))
    if result.get("unfamiliar"):
        words.level = _worse(words.level, CHECK)
        why = result.get("unfamiliar_reason") or result.get("unfamiliar_message") or ""
        words.flags.append("Unfamiliar image: unlike what the model was trained on; check by hand"
                           + (f" ({why})" if isinstance(why, str) and why else ""))
    if result.get("uncertain"):
        words.level = _worse(words.level, CHECK)
        words.flags.append("Uncertain: check by hand")
    for note in result.get("notes") or []:
        words.details.append(str(note))


def _worse(a: str, b: str) -> str:
    order = (OK, CHECK, RETAKE, ERROR)
    return max(a, b, key=order.index)
