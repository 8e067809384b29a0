"""QAT building blocks on a tiny random MobileNet V1 (no training): folding is exact, the fake
quantizers land on the int8 grids the converters use, the snapped export matches the QAT model."""

import numpy as np
import pytest

from edgecell.convert import qat as Q


def test_quantize_kernel_grid():
    rng = np.random.default_rng(0)
    k = rng.normal(0, 1, (3, 3, 4, 5)).astype(np.float32)
    q = Q.quantize_kernel_np(k, depthwise=False)
    scale = np.abs(k).max(axis=(0, 1, 2)) / 127
    steps = q / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # on the per-output-channel grid
    assert np.abs(steps).max() <= 127 + 1e-3
    assert np.abs(q - k).max() <= scale.max() / 2 + 1e-6
    q7 = Q.quantize_kernel_np(k, depthwise=False, levels=64)  # ORT reduce_range: [-64, 64] x max / 64
    s7 = np.abs(k).max(axis=(0, 1, 2)) / 64
    np.testing.assert_allclose(q7 / s7, np.round(q7 / s7), atol=1e-3)
    assert np.abs(q7 - k).max() > np.abs(q - k).max()  # coarser than the 8-bit grid
    dw = rng.normal(0, 1, (3, 3, 6, 1)).astype(np.float32)
    qdw = Q.quantize_kernel_np(dw, depthwise=True)
    s = np.abs(dw).max(axis=(0, 1, 3)) / 127  # one scale per input channel
    np.testing.assert_allclose(qdw[..., 0] / s, np.round(qdw[..., 0] / s), atol=1e-3)


def _random_bn(keras, model, rng) -> None:
    """Non-trivial BatchNorm statistics, so that folding them is actually tested."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, g.shape), rng.normal(0, 0.3, b.shape),
                               rng.normal(0, 0.3, m.shape), rng.uniform(0.2, 3, v.shape)])


@pytest.fixture(scope="module")
def v1():
    keras = pytest.importorskip("keras")
    from edgecell.convert import products as P

    model, _ = P.build_v1(8, size=32, weights=None, trainable_blocks=2)
    rng = np.random.default_rng(1)
    _random_bn(keras, model, rng)
    return keras, model, rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)


def test_fold_chain_is_exact_and_keeps_names(v1):
    keras, model, x = v1
    folded = Q.fold_chain(model, fake_quant=False)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    assert {l.name for l in folded.layers} <= {l.name for l in model.layers}
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-5)


def test_qat_model_frozen_boundary_and_grid(v1):
    keras, model, x = v1
    qat = Q.fold_chain(model, fake_quant=True, trainable_from="conv_dw_12")
    trainable = [l.name for l in qat.layers if l.trainable and l.weights]
    assert trainable == ["conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13", "products_probs"]
    relu = keras.Model(qat.input, qat.get_layer("conv_pw_3_relu").output)(x).numpy()
    np.testing.assert_allclose(relu / Q.RELU6_STEP, np.round(relu / Q.RELU6_STEP), atol=1e-3)
    assert relu.min() >= 0 and relu.max() <= 6
    # fake-quant close to float; the exported (snapped) plain model equals the QAT model up to activations
    plain = Q.fold_chain(model, fake_quant=False)
    Q.copy_weights(qat, plain)
    k = plain.get_layer("conv_pw_13").get_weights()[0]
    np.testing.assert_array_equal(k, Q.quantize_kernel_np(k, depthwise=False))
    np.testing.assert_allclose(plain(x).numpy(), qat(x).numpy(), atol=0.02)


def test_rejects_non_chain():
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(inp)
    model = keras.Model(inp, keras.layers.Add(name="add")([a, b]))
    with pytest.raises(Exception, match="not a chain"):
        Q.fold_chain(model, fake_quant=True)


def test_gate_qat_pair_all_layers_trainable():
    """The utility gate (MobileNet V1 0.25 + GAP/dropout/dense head) is a foldable chain; with
    trainable_from='' (train_gate --qat-from) every weighted layer is fine-tuned."""
    keras = pytest.importorskip("keras")
    from edgecell.convert.train_gate import build_gate, parse_args

    model = build_gate(size=32, weights=None)
    rng = np.random.default_rng(2)
    _random_bn(keras, model, rng)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    qat, plain = Q.qat_pair(model, Q.QatSettings(trainable_from=""))
    weighted = [l for l in qat.layers if l.weights]
    assert weighted and all(l.trainable for l in weighted)
    assert weighted[0].name == "conv1" and weighted[-1].name == "gate_probs"
    np.testing.assert_allclose(plain(x).numpy(), model(x).numpy(), atol=1e-5)  # folding is exact
    Q.copy_weights(qat, plain)
    np.testing.assert_allclose(plain(x).numpy(), qat(x).numpy(), atol=0.05)
    args = parse_args(["--labels", "l.csv", "--out", "o", "--qat-from", "g.keras", "--lr", "3e-5"])
    assert args.qat_from == "g.keras" and args.lr == 3e-5
