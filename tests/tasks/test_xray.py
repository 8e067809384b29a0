"""X-ray task: Grad-CAM in numpy matches TensorFlow's GradientTape, results, overlays, bad inputs,
and the shipped model (when present)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.errors import ImageError, ModelError
from edgecell.images import decode_image
from edgecell.modelinfo import ModelInfo
from edgecell.tasks import xray

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "edge" / "models" / "xray_int8.tflite"  # the default: MobileNet, film preparation, flag
VBREATHNET = REPO / "edge" / "models" / "xray_vbreathnet_int8.tflite"  # the paper's reproduction
LABELS = ["COVID-19", "Normal", "Viral Pneumonia"]


def _xray_files(n: int = 6) -> list[Path]:
    try:
        from edgecell.calibration import data_root

        root = data_root()
    except Exception:
        return []
    out = []
    for sub in ("covid19_radiography_db_subset/val/COVID", "covid19_radiography_db_subset/val/Normal",
                "chest_xray_covid19_3class/Covid19-dataset/val/Viral Pneumonia"):
        out += sorted((root / sub).glob("*.*"))[: max(1, n // 3)]
    return out


def _small_info(size: int) -> ModelInfo:
    return ModelInfo(task="xray", name="small", labels=LABELS, input_size=(size, size), channels=3,
                     mean=[0.0], std=[255.0], settings={"gradcam_head": "head.npz"})


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@pytest.fixture(scope="module")
def small():
    """A small model with V-BreathNet's head structure (built by the same function): the feature map
    is the last block's batch norm (16x16x8), then max-pool, flatten, dense 16, batch norm, dense 3."""
    pytest.importorskip("tensorflow")
    import keras

    from edgecell.convert.models.vbreathnet import build_vbreathnet, head_weights, with_feature_output, with_logits_output

    keras.utils.set_random_seed(0)
    model = build_vbreathnet(64, filters=(4, 6, 8), dense=16)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial batch-norm statistics, as after training
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return model, with_feature_output(model), with_logits_output(model), head_weights(model)


def _inputs(size: int) -> list[np.ndarray]:
    from edgecell.tasks.common import to_input_tensor

    info = _small_info(size)
    images = [decode_image(p) for p in _xray_files()]
    rng = np.random.default_rng(1)
    while len(images) < 6:
        images.append(cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (0, 0), 2))
    return [to_input_tensor(im, info)[0] for im in images]


def test_numpy_gradcam_matches_tensorflow_gradienttape(small):
    import tensorflow as tf

    model, cam_model, logit_model, head = small
    for x in _inputs(64):
        xt = tf.constant(x)
        for c in range(3):
            with tf.GradientTape() as tape:
                logits, feat = logit_model(xt, training=False)
                y = logits[:, c]
            grads = tape.gradient(y, feat).numpy()[0]
            feat = feat.numpy()[0]
            alpha_tf = grads.mean(axis=(0, 1))
            raw_tf = (feat * alpha_tf).sum(-1)
            heat_np, alpha_np = xray.gradcam_map(feat, head, c)
            np.testing.assert_allclose(alpha_np, alpha_tf, rtol=1e-3, atol=1e-6)
            assert _corr((feat * alpha_np).sum(-1), raw_tf) >= 0.999
            heat_tf = np.maximum(raw_tf, 0)
            if heat_tf.max() > 0 and heat_tf.std() > 0:
                assert _corr(heat_np, heat_tf / heat_tf.max()) >= 0.95
        # the numpy head reproduces the model's own class scores from the feature map
        scores, feat = cam_model(xt, training=False)
        np.testing.assert_allclose(xray.softmax(xray.head_logits(feat.numpy()[0], head)), scores.numpy()[0],
                                   atol=1e-4)


class FakeSession:
    """Stands in for a backend session: runs the Keras model, names outputs as TFLite does."""

    def __init__(self, cam_model, path: Path):
        self.cam_model, self.path, self.calls = cam_model, path, 0

    def run(self, tensor):
        self.calls += 1
        scores, feat = self.cam_model(tensor, training=False)
        return {"StatefulPartitionedCall:1": scores.numpy(), "StatefulPartitionedCall:0": feat.numpy()}


@pytest.fixture()
def task_setup(small, tmp_path):
    from edgecell.convert.models.vbreathnet import head_weights

    model, cam_model, _, _ = small
    np.savez(tmp_path / "head.npz", **head_weights(model))
    return FakeSession(cam_model, tmp_path / "small.tflite"), _small_info(64)


def _run(session, info, image, **options):
    tensor, ctx = xray.preprocess(image, info)
    outputs = xray.infer(session, tensor, info, context=ctx, **options)
    return xray.postprocess(outputs, ctx, info, **options)


def test_result_overlay_and_one_model_call(task_setup):
    session, info = task_setup
    files = _xray_files(3)
    image = decode_image(files[0]) if files else cv2.GaussianBlur(
        np.random.default_rng(2).integers(0, 255, (300, 300, 3), dtype=np.uint8), (0, 0), 1)
    result = _run(session, info, image)
    assert session.calls == 1
    assert result.label in LABELS and abs(sum(result.probabilities.values()) - 1) < 1e-4
    assert result.heatmap is not None and result.heatmap.shape == (16, 16) and result.heatmap.max() <= 1.0
    d = result.to_dict()
    json.dumps(d)
    assert d["gradcam"]["class"] == result.label and len(d["gradcam"]["heatmap"]) == 16
    assert result.label in result.summary()
    overlay = xray.annotate(image, result)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8 and not np.array_equal(overlay, image)
    other = _run(session, info, image, gradcam_class="Normal")
    assert other.gradcam_class == "Normal"
    assert _run(session, info, image, gradcam=False).heatmap is None


@pytest.mark.parametrize("kind", ["black", "white", "tiny", "colour_photo"])
def test_bad_images_flagged_with_retake_message(task_setup, kind, real_jpeg):
    session, info = task_setup
    image = {"black": np.zeros((400, 400, 3), np.uint8), "white": np.full((400, 400, 3), 255, np.uint8),
             "tiny": np.full((6, 9, 3), 90, np.uint8), "colour_photo": decode_image(real_jpeg)}[kind]
    result = _run(session, info, image)
    assert result.retake and result.message.startswith("Retake the image")
    assert "Retake" in result.summary()
    json.dumps(result.to_dict())
    assert xray.annotate(image, result).shape == image.shape


def test_16bit_png_and_truncated_png(tmp_path, task_setup):
    session, info = task_setup
    files = _xray_files(3)
    grey = cv2.cvtColor(decode_image(files[0]), cv2.COLOR_RGB2GRAY) if files else \
        np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    p16 = tmp_path / "xray16.png"
    cv2.imwrite(str(p16), grey.astype(np.uint16) * 257)
    r8, r16 = _run(session, info, decode_image(files[0]) if files else cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)), \
        _run(session, info, decode_image(p16))
    assert r16.label == r8.label and abs(r16.confidence - r8.confidence) < 0.02
    data = p16.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as err:
        decode_image(bad)
    assert "\n" not in str(err.value) and "truncated" in str(err.value)


def test_missing_head_file_gives_a_note_not_a_crash(small, tmp_path):
    _, cam_model, _, _ = small
    session, info = FakeSession(cam_model, tmp_path / "m.tflite"), _small_info(64)
    result = _run(session, info, np.full((64, 64, 3), 120, np.uint8))
    assert result.heatmap is None and any("Grad-CAM" in n for n in result.notes)


@pytest.mark.parametrize("shipped", [SHIPPED, VBREATHNET], ids=lambda p: p.name)
def test_shipped_model_end_to_end(shipped):
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    if not shipped.is_file():
        pytest.fail(f"{shipped.name} is not shipped")
    model = load_model(shipped)
    assert model.info.task == "xray" and model.info.labels == LABELS
    files = _xray_files(3)
    images = [decode_image(p) for p in files] or [np.full((256, 256, 3), 128, np.uint8)]
    for image in images:
        result, timings = predict(model, image)
        tensor, ctx = xray.preprocess(image, model.info)
        out = model.session.run(tensor)
        scores, feat = xray.split_outputs(out, model.info)
        assert result.heatmap is not None and result.heatmap.shape == feat.shape[:2]
        # the float head on the INT8 feature map reproduces the INT8 model's scores closely
        recomputed = xray.softmax(xray.head_logits(feat, xray.head_for(shipped, model.info)))
        assert np.abs(recomputed - scores).max() < 0.15
    result, _ = predict(model, np.zeros((300, 300, 3), np.uint8))
    assert result.retake


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped X-ray model")
def test_dicom_gives_the_same_answer_as_its_png(tmp_path, make_dicom):
    """A real X-ray stored as 12-bit DICOM (full-range window) is classified as its 8-bit PNG is."""
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    files = _xray_files(3)
    if not files:
        pytest.skip("X-ray data not found beside the repo")
    model = load_model(SHIPPED)
    for n, png in enumerate(files):
        grey = decode_image(png)[:, :, 0]
        dcm = make_dicom(tmp_path / f"{n}.dcm", grey.astype(np.uint16) * 16, WindowCenter=2048, WindowWidth=4096)
        from_png, _ = predict(model, decode_image(png))
        from_dcm, _ = predict(model, decode_image(dcm))
        assert from_dcm.label == from_png.label
        assert abs(from_dcm.confidence - from_png.confidence) < 0.05


# ----------------------------------------------------------------------------- the MobileNet model's head, flag and film preparation

@pytest.fixture(scope="module")
def mobilenet_small():
    """The default model's builder at a small size, random weights: [scores, feature map] and its
    dense head as the device reads it."""
    pytest.importorskip("tensorflow")
    import keras

    from edgecell.convert.train_xray_mobilenet import build_model, dense_head, with_feature_output

    keras.utils.set_random_seed(0)
    model = build_model(size=64)
    return model, with_feature_output(model), dense_head(model)


def test_gap_head_gradcam_matches_tensorflow_gradienttape(mobilenet_small):
    import tensorflow as tf

    model, cam_model, head = mobilenet_small
    w, b = model.get_layer("scores").get_weights()
    x = tf.constant(np.random.default_rng(3).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32))
    for c in range(3):
        with tf.GradientTape() as tape:
            _, feat = cam_model(x, training=False)
            tape.watch(feat)
            logits = tf.reduce_mean(feat, axis=(1, 2)) @ w + b  # the layer before its softmax
            y = logits[:, c]
        grads = tape.gradient(y, feat).numpy()[0]
        heat, alpha = xray.gradcam_map(feat.numpy()[0], head, c)
        np.testing.assert_allclose(alpha, grads.mean(axis=(0, 1)), rtol=1e-4, atol=1e-7)
    scores, feat = cam_model(x, training=False)
    np.testing.assert_allclose(xray.softmax(xray.head_logits(feat.numpy()[0], head)), scores.numpy()[0], atol=1e-5)


def test_film_preparation_is_one_function_for_training_and_device():
    rng = np.random.default_rng(0)
    image = np.zeros((300, 260, 3), np.uint8)
    image[20:280, 30:230] = cv2.GaussianBlur(rng.integers(0, 255, (260, 200, 3), dtype=np.uint8), (0, 0), 3)
    grey, box = xray.film_grey(image)
    pixels, crop = xray.film_pixels(image, 96)
    np.testing.assert_array_equal(pixels, xray.film_crop(grey, 96))
    assert pixels.shape == (96, 96, 3) and grey.shape == (224, 224)
    assert box == (30, 20, 230, 280)  # the black frame is trimmed
    x0, y0, x1, y1 = crop
    assert 30 < x0 < x1 < 230 and 20 < y0 < y1 < 280  # then the margin


def test_unfamiliar_score_is_the_distance_to_the_nearest_class_mean():
    stats = {"maha_means": np.array([[0, 0], [10, 0]], np.float32), "maha_precision": np.diag([1.0, 4.0]).astype(np.float32)}
    assert xray.unfamiliar_score(np.array([9.0, 1.0]), stats) == pytest.approx(1 + 4)
    assert xray.unfamiliar_score(np.array([0.0, 0.0]), stats) == 0


def _gap_head(**extra) -> dict:
    head = {"kind": "gap_dense", "w": np.eye(4, 3, dtype=np.float32), "b": np.zeros(3, np.float32)}
    head.update(extra)
    return head


def _gap_info(**settings) -> ModelInfo:
    return ModelInfo(task="xray", name="gap", labels=LABELS, input_size=(64, 64), channels=3, settings=settings)


def _outputs(features: np.ndarray, scores=(0.9, 0.05, 0.05)) -> dict:
    return {"scores": np.array([scores], np.float32), "features": features[None].astype(np.float32)}


def test_film_far_from_the_training_films_is_flagged_unfamiliar_and_uncertain():
    stats = {"maha_means": np.zeros((3, 4), np.float32), "maha_precision": np.eye(4, dtype=np.float32)}
    info = _gap_info(unfamiliar_threshold=10.0)
    near = xray.postprocess(_outputs(np.full((3, 3, 4), 0.5)), None, info, head_path=None, gradcam=False)
    assert near.unfamiliar_score is None  # no head given: nothing to measure, nothing claimed
    ctx = xray.XrayContext(quality=None, head=_gap_head(**stats))
    near = xray.postprocess(_outputs(np.full((3, 3, 4), 0.5)), ctx, info)
    far = xray.postprocess(_outputs(np.full((3, 3, 4), 5.0)), ctx, info)
    assert not near.unfamiliar and not near.uncertain and near.message == ""
    assert far.unfamiliar and far.uncertain and far.unfamiliar_score == pytest.approx(100.0)
    assert "Unfamiliar film" in far.message and "Unfamiliar film" in far.summary()
    d = far.to_dict()
    json.dumps(d)
    assert d["unfamiliar"] is True and d["uncertain"] is True and d["unfamiliar_score"] == 100.0


def test_turned_film_is_reported_with_a_plain_message():
    rot = {"rot_w": np.array([[0, 5, 0, 0]] * 4, np.float32), "rot_b": np.zeros(4, np.float32)}
    ctx = xray.XrayContext(quality=None, head=_gap_head(**rot))
    result = xray.postprocess(_outputs(np.ones((3, 3, 4))), ctx, _gap_info())
    assert result.rotation == 90 and not result.upright and result.uncertain
    assert "does not look upright" in result.message and result.to_dict()["upright"] is False
    upright = xray.postprocess(_outputs(np.zeros((3, 3, 4))), ctx, _gap_info(upright_min_probability=0.9))
    assert upright.rotation == 0 and upright.upright  # equal odds: below the sidecar's probability


def test_shipped_model_never_answers_a_non_chest_image_unflagged():
    """Blood smears and product photos (the other tasks' shipped samples) are not chest films: the
    shipped model's answer on each must come flagged uncertain with a plain message; the smears,
    far from any film, flagged unfamiliar."""
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    model = load_model(SHIPPED)
    for folder in ("bccd", "products"):
        for path in sorted((REPO / "edge" / "samples" / folder).glob("*.jpg"))[:3]:
            result, _ = predict(model, decode_image(path))
            assert result.uncertain and result.message, path.name
            assert result.unfamiliar or folder == "products", path.name


def test_answer_whose_features_lie_nearer_another_class_is_uncertain_with_a_plain_message():
    """The features' second opinion: the network says COVID-19 (0.9) but the pooled features sit on
    the Normal mean: uncertain, with the message naming the class the film resembles."""
    stats = {"maha_means": np.array([[0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 0, 0]], np.float32),
             "maha_precision": np.eye(4, dtype=np.float32)}
    ctx = xray.XrayContext(quality=None, head=_gap_head(**stats))
    info = _gap_info(disagreement_threshold=0.0, unfamiliar_threshold=100.0)
    on_normal = np.zeros((3, 3, 4))
    on_normal[..., 0] = 4.0
    result = xray.postprocess(_outputs(on_normal), ctx, info, gradcam=False)
    assert result.label == "COVID-19" and result.disagrees and result.uncertain and not result.unfamiliar
    assert result.disagreement_score == pytest.approx(16.0) and result.nearest_other == "Normal"
    assert "resembles the training films of Normal more than those of COVID-19" in result.message
    assert result.to_dict()["disagrees"] is True
    agreeing = xray.postprocess(_outputs(np.zeros((3, 3, 4))), ctx, info, gradcam=False)
    assert not agreeing.disagrees and not agreeing.uncertain and agreeing.message == ""


def test_low_confidence_answer_says_why_it_is_uncertain():
    result = xray.postprocess(_outputs(np.zeros((3, 3, 4)), scores=(0.45, 0.35, 0.2)), None,
                              _gap_info(min_confidence=0.5), gradcam=False)
    assert result.uncertain and result.message == ("Uncertain answer: confidence 0.45 is below 0.50; "
                                                   "have it read by a person.")


def test_sidecar_without_a_resize_key_keeps_the_resize_its_model_was_trained_with():
    """Models trained before the bit-exact film resize (`resize` absent) keep INTER_AREA; new ones
    write "exact" (`edgecell.images.resize`, the same bytes on every CPU)."""
    legacy = _gap_info(film_prep={"harmonise": 224, "clahe_clip": 2.0, "clahe_tiles": 4, "margin": 0.06})
    assert xray.film_prep_of(legacy)["resize"] == "area"
    assert xray.film_prep_of(_gap_info(film_prep=dict(xray.FILM_PREP)))["resize"] == "exact"
    assert xray.film_prep_of(_gap_info()) is None


def test_int8_feature_correction_maps_pooled_features_before_the_answer_and_the_flags():
    """An INT8 sidecar's `feature_correction` (per-channel scale and offset) is applied to the
    pooled features; the answer then comes from the head on the corrected features, not from the
    file's own scores, and the distances are measured on them too."""
    stats = {"maha_means": np.zeros((3, 4), np.float32), "maha_precision": np.eye(4, dtype=np.float32)}
    ctx = xray.XrayContext(quality=None, head=_gap_head(**stats))
    fix = {"scale": [1.0, 1.0, 1.0, 1.0], "offset": [-1.0, 1.0, 0.0, 0.0]}
    features = np.zeros((3, 3, 4))
    features[..., 0] = 0.5  # raw: COVID-19 (the scores say so too); corrected: [-0.5, 1, 0, 0] -> Normal
    plain = xray.postprocess(_outputs(features), ctx, _gap_info(), gradcam=False)
    fixed = xray.postprocess(_outputs(features), ctx, _gap_info(feature_correction=fix), gradcam=False)
    assert plain.label == "COVID-19" and fixed.label == "Normal"
    assert fixed.unfamiliar_score == pytest.approx(0.25 + 1.0)


def test_commissioned_head_with_site_means_gives_one_distance_per_class():
    """A commissioned head adds the site's class means (`maha_classes` names each row's class): the
    second opinion compares classes, each at its nearest mean, and names a label, not a row."""
    stats = {"maha_means": np.array([[0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 0, 0], [1, 0, 0, 0]], np.float32),
             "maha_precision": np.eye(4, dtype=np.float32), "maha_classes": np.array([0, 1, 2, 1], np.float32)}
    ctx = xray.XrayContext(quality=None, head=_gap_head(**stats))
    result = xray.postprocess(_outputs(np.zeros((3, 3, 4))), ctx, _gap_info(disagreement_threshold=0.0), gradcam=False)
    assert result.nearest_other == "Normal" and result.disagreement_score == pytest.approx(0 - 1.0)
    assert not result.disagrees


def test_linear_feature_correction_takes_its_matrix_from_the_head_file():
    """With {"kind": "linear"} the pooled features go through the head file's [K+1, K]
    `correction_matrix` (features, then intercept), across channels."""
    swap = np.zeros((5, 4), np.float32)
    swap[0, 1] = swap[1, 0] = swap[2, 2] = swap[3, 3] = 1.0  # channels 0 and 1 exchanged, no intercept
    ctx = xray.XrayContext(quality=None, head=_gap_head(correction_matrix=swap))
    features = np.zeros((3, 3, 4))
    features[..., 0] = 0.5  # raw: COVID-19; corrected: channel 1 -> Normal
    fixed = xray.postprocess(_outputs(features), ctx, _gap_info(feature_correction={"kind": "linear"}), gradcam=False)
    assert fixed.label == "Normal"


def test_linear_feature_correction_without_its_matrix_is_a_clear_error():
    ctx = xray.XrayContext(quality=None, head=_gap_head())
    with pytest.raises(ModelError, match="correction_matrix"):
        xray.postprocess(_outputs(np.zeros((3, 3, 4))), ctx, _gap_info(feature_correction={"kind": "linear"}),
                         gradcam=False)
