"""Image classification (the product classifier, and any plain classifier): top-k categories,
an `uncertain` flag below `min_confidence` so that a person checks instead of a guess, and, for a
model with a pooled-feature output and its training images' statistics (the product classifier),
an `unfamiliar` flag for an image unlike anything it was trained on (a blood smear, an X-ray), which
it would otherwise answer with one of its classes, sometimes confidently."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgecell.modelinfo import ModelInfo
from edgecell.tasks.base import Task, TaskResult, check_label_count, output_size
from edgecell.tasks.common import require_task, softmax, to_input_tensor
from edgecell.tasks.familiarity import flag_unfamiliar, load_arrays

UNFAMILIAR_MESSAGE = ("unfamiliar image: it does not look like the images this model was trained on "
                      "(score {score:.0f} > {threshold:.0f}); the answer is not to be trusted")


@dataclass
class ClassifyResult(TaskResult):
    label: str
    index: int
    confidence: float
    top: list[tuple[str, float]] = field(default_factory=list)
    uncertain: bool = False  # below min_confidence, or unfamiliar
    #: the image lies far from the training images (pooled-feature Mahalanobis score above the threshold)
    unfamiliar: bool = False
    unfamiliar_score: float | None = None  # None: the model carries no statistics for the check
    message: str = ""

    def to_dict(self) -> dict:
        out = {"label": self.label, "index": self.index, "confidence": round(self.confidence, 5),
               "top": [{"label": l, "p": round(p, 5)} for l, p in self.top],
               "uncertain": self.uncertain, "unfamiliar": self.unfamiliar,
               "unfamiliar_score": None if self.unfamiliar_score is None else round(self.unfamiliar_score, 2)}
        if self.message:
            out["message"] = self.message
        return out

    def summary(self) -> str:
        if self.unfamiliar:
            return f"{self.label} {self.confidence:.2f} (UNFAMILIAR: {self.message})"
        flag = " (uncertain: check by hand)" if self.uncertain else ""
        return f"{self.label} {self.confidence:.2f}{flag}"

    @property
    def needs_attention(self) -> bool:
        return self.uncertain


def preprocess(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, None]:
    require_task(info, "classify", "products", "raw", "gate", "xray")
    tensor, _ = to_input_tensor(image, info)
    return tensor, None


def probabilities(outputs: dict[str, np.ndarray], info: ModelInfo) -> np.ndarray:
    """Class probabilities from the model's first output (softmax applied if it gives logits)."""
    name = info.settings.get("probs_output")
    raw = outputs[name] if name in outputs else next(iter(outputs.values()))
    raw = raw.reshape(-1).astype(np.float32)
    if raw.min() < -1e-3 or abs(float(raw.sum()) - 1.0) > 0.02:
        raw = softmax(raw)
    return raw


def postprocess(outputs: dict[str, np.ndarray], context, info: ModelInfo, *, top_k: int = 3,
                min_confidence: float | None = None, **_) -> ClassifyResult:
    probs = probabilities(outputs, info)
    labels = info.labels or [str(i) for i in range(probs.size)]
    order = np.argsort(-probs)[: max(1, top_k)]
    best = int(order[0])
    threshold = min_confidence if min_confidence is not None else info.settings.get("min_confidence", 0.0)
    result = ClassifyResult(
        label=labels[best] if best < len(labels) else str(best), index=best, confidence=float(probs[best]),
        top=[(labels[i] if i < len(labels) else str(i), float(probs[i])) for i in order],
        uncertain=bool(probs[best] < threshold),
    )
    if flag_unfamiliar(result, outputs, info, UNFAMILIAR_MESSAGE):
        result.uncertain = True
    return result


def annotate(image: np.ndarray, result: ClassifyResult) -> np.ndarray:
    out = image.copy()
    scale = max(0.5, out.shape[1] / 640)
    colour = (230, 160, 0) if result.uncertain else (0, 170, 0)
    text = result.summary()
    cv2.rectangle(out, (0, 0), (out.shape[1], int(34 * scale)), (0, 0, 0), -1)
    cv2.putText(out, text, (6, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour, max(1, int(2 * scale)))
    return out


class ClassifyTask(Task):
    """A plain image classifier (`classify`), and the product classifier (`products`), which is one."""

    def __init__(self, name: str = "classify"):
        self.name = name

    def sample_set(self, info: ModelInfo) -> str | None:
        return "products" if self.name == "products" else None

    def check(self, info: ModelInfo, session) -> None:
        check_label_count(info, session, output_size(session, info.settings.get("probs_output")), "class scores")
        load_arrays(info, Path(session.path).parent)

    def preprocess(self, image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, None]:
        return preprocess(image, info)

    def postprocess(self, outputs: dict, context, info: ModelInfo, **options) -> ClassifyResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: ClassifyResult) -> np.ndarray:
        return annotate(image, result)

    def evaluate(self, model_paths, data, out, *, split, backend) -> dict:
        from edgecell.evaluation.classification import evaluate_classifier

        if self.name == "products":
            from edgecell.calibration import dataset_dir

            data = dataset_dir("clothing_small_subset", data)
        elif data is None:
            from edgecell.errors import EdgecellError

            raise EdgecellError("--data DIR is needed for a classify model: a folder of <split>/<class>/ images")
        return evaluate_classifier(model_paths, data, out, split=split or "test", backend=backend)
