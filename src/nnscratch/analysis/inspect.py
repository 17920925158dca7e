"""What a trained MLP has learned, computed with the NumPy engine's own layers (``nnscratch inspect``).

Notation: ``p (N, D)`` are the *pixels* as the figures show them, ``pixel / 255`` in ``[0, 1]``,
flattened in the feature order of :mod:`nnscratch.data.preprocess`; ``x (N, D)`` is the *model
input*: ``x = p``, or ``x = (p - mean[ch]) / std[ch]`` per channel ``ch`` when the model was
trained with ``--standardize``. ``z (N, C)`` are the logits. Every pass runs in evaluation mode:
batch norm normalises with its running statistics and dropout is the identity, as ``evaluate``
and ``predict`` run the model.

* **First-layer weight images** (:func:`first_layer_units`): row ``u`` of the first dense layer's
  ``W (U, D)`` is the pattern hidden unit ``u`` responds to, ``a_u = f(W[u] . x + b_u)``; reshaped
  to ``(H, W, C)`` it is an image (the classic MLP "feature map"). With more units than a figure
  shows, the ones with the largest ``||W[u]||`` (2-norm) are chosen.
* **Per-class top units** (:func:`class_unit_scores`, :func:`top_units`): with ``a_u(x)`` the
  output of the first hidden block (dense, batch norm, activation, dropout: the input of the
  second dense layer), unit ``u``'s score for class ``c`` is how much more it responds to that
  class than to the test set as a whole::

      score[c, u] = mean_{i: y_i = c} a_u(x_i)  -  mean_i a_u(x_i)          (over the test images)

  and a class's top units are the ``k`` of highest score (ties: the lower index first).
* **Activation patterns** (:func:`hidden_outputs`): each hidden block's output for chosen images.
* **Saliency** (:func:`saliency`): the gradient of one class's logit with respect to the pixels,
  by the engine's own backward pass (the first dense layer's ``dx = dout @ W``, which training
  never computes), with ``dout = onehot(c)`` at the logits::

      S_c(p) = dz_c / dp = (dz_c / dx) * (dx / dp),     dx / dp = 1 / std[ch]  (1 without standardising)

  (the standardisation is a per-channel affine map, so the chain rule is one division). The
  class ``c`` is the model's prediction for the image unless another is asked for.
* **SmoothGrad** (:func:`smoothgrad`, Smilkov et al. 2017): the mean saliency at ``n`` noisy
  copies of the image, for the same class ``c`` (the prediction on the clean image)::

      SG_c(p) = (1/n) sum_k S_c(p + eps_k),     eps_k ~ Normal(0, sigma^2 I),
      sigma = noise * (max_d p_d - min_d p_d)             (noise = 0.15, the paper's choice)

  The noisy pixels are not clipped to ``[0, 1]`` (as in the paper). The noise of image ``i`` is
  keyed: ``SeedSequence(seed, spawn_key=(STREAM_SMOOTHGRAD, i))`` (:func:`smoothgrad_noise`), so
  a test image gets the same noise whichever others are inspected with it.
* **Top losses** (:func:`top_losses`): the test images of highest cross-entropy
  ``-log softmax(z_i)[y_i]``, highest first (ties: the lower index first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nnscratch.errors import ParameterError
from nnscratch.model.registry import dense_layers
from nnscratch.numpy_engine.model import Sequential
from nnscratch.training.metrics import sample_losses, softmax
from nnscratch.training.streams import STREAM_SMOOTHGRAD, stream_seed

#: SmoothGrad's noise, as a fraction of the image's pixel range (Smilkov et al. 2017's 10-20 %).
DEFAULT_NOISE = 0.15
#: Rows of one forward or backward pass (memory: rows x the widest layer x 8 bytes, a few per layer).
BATCH = 1024


def eval_model(spec, state: dict[str, np.ndarray], dtype=np.float32) -> Sequential:
    """The NumPy engine's network of ``spec`` with the weights and buffers of ``state``, for the
    functions below (its own object: nothing here touches an engine being trained)."""
    model = Sequential(spec, dtype)
    model.load_state_dict(state)
    return model


def pixels_to_inputs(pixels: np.ndarray, standardization: dict | None, image_shape: tuple[int, ...]) -> np.ndarray:
    """``x`` from ``p`` (a new array of ``p``'s dtype): ``p`` itself, or standardised per channel
    with the statistics a model file stores (``{"mean": [...], "std": [...]}``)."""
    from nnscratch.data.preprocess import ChannelStats, standardize

    x = np.array(pixels, copy=True)
    if standardization:
        stats = ChannelStats(np.asarray(standardization["mean"], dtype=np.float64),
                             np.asarray(standardization["std"], dtype=np.float64))
        standardize(x, stats, image_shape, out=x)
    return x


def input_scale(standardization: dict | None, image_shape: tuple[int, ...], dtype=np.float64) -> np.ndarray | float:
    """``dx / dp`` for each feature ``(D,)``: ``1 / std[ch]`` of its channel, or 1 without standardising."""
    if not standardization:
        return 1.0
    std = np.asarray(standardization["std"], dtype=np.float64)
    pixels = int(np.prod(image_shape[:2]))
    return (1.0 / np.tile(std, pixels)).astype(dtype)  # (H*W*C,), channel fastest as in the features


def logits(model: Sequential, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """``z (N, C)`` of every row of ``x``, evaluation mode."""
    out = np.empty((len(x), model.spec.num_classes), dtype=model.dtype)
    for start in range(0, len(x), batch):
        out[start:start + batch] = model.forward(np.array(x[start:start + batch], dtype=model.dtype), train=False)
    return out


def hidden_outputs(model: Sequential, x: np.ndarray, batch: int = BATCH, blocks: int | None = None) -> list[np.ndarray]:
    """The output of each hidden block (the input of dense layers 2, 3, ...) for every row of
    ``x``, evaluation mode: a list of ``(N, width)`` arrays, first hidden block first (empty for a
    network with one dense layer). ``blocks``: only the first this many."""
    cuts = dense_layers(model.spec)[1:][:blocks]
    outs = [np.empty((len(x), model.layers[i].in_features), dtype=model.dtype) for i in cuts]
    for start in range(0, len(x), batch):
        h = np.array(x[start:start + batch], dtype=model.dtype)
        for i, layer in enumerate(model.layers[:cuts[-1]] if cuts else ()):
            h = layer.forward(h, train=False)
            if i + 1 in cuts:
                outs[cuts.index(i + 1)][start:start + batch] = h
    return outs


def first_layer_weights(model: Sequential) -> np.ndarray:
    """The first dense layer's ``W (U, D)``, float64: row ``u`` is unit ``u``'s incoming weights."""
    return np.array(model.layers[dense_layers(model.spec)[0]].params["weight"], dtype=np.float64)


def first_layer_units(weight: np.ndarray, show: int = 64) -> tuple[np.ndarray, str]:
    """``(units, how)``: the first layer's units to draw, all of them when at most ``show``, else
    the ``show`` of largest weight norm ``||W[u]||``, largest first; and a phrase saying which."""
    if len(weight) <= show:
        return np.arange(len(weight)), f"all {len(weight)} units"
    units = np.argsort(-np.linalg.norm(weight, axis=1), kind="stable")[:show]
    return units, f"the {show} of {len(weight)} units with the largest weight norm"


def class_unit_scores(activations: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``score[c, u] = mean_{i: y_i = c} a[i, u] - mean_i a[i, u]`` (float64, ``(C, U)``); a class
    without test images scores 0 everywhere."""
    a = np.asarray(activations, dtype=np.float64)
    labels = np.asarray(labels)
    overall = a.mean(axis=0)
    scores = np.zeros((num_classes, a.shape[1]))
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            scores[c] = a[rows].mean(axis=0) - overall
    return scores


def top_units(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` units of highest score per class, highest first (ties: lower index): ``(C, k)``."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]


def input_gradient(model: Sequential, x: np.ndarray, classes: Sequence[int], batch: int = BATCH) -> np.ndarray:
    """``dz_c / dx (N, D)`` for each row of ``x`` and its class ``classes[i]``: the evaluation-mode
    forward pass keeping what backward needs, then the backward pass from ``onehot(c)`` down to the
    first layer's ``dx`` (the parameters' gradients land in ``model``'s own ``grads``, unused)."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.shape != (len(x),):
        raise ParameterError("classes", f"must give one class per row ({len(x)}), got shape {classes.shape}")
    if len(x) and (classes.min() < 0 or classes.max() >= model.spec.num_classes):
        raise ParameterError("classes", f"must be in 0..{model.spec.num_classes - 1}")
    out = np.empty((len(x), model.spec.input_dim), dtype=model.dtype)
    for start in range(0, len(x), batch):
        rows = np.array(x[start:start + batch], dtype=model.dtype)
        z = model.forward(rows, train=False, keep=True)
        dz = np.zeros_like(z)
        dz[np.arange(len(rows)), classes[start:start + batch]] = 1.0
        out[start:start + batch] = model.backward(dz, need_dx=True)
    return out


def saliency(model: Sequential, pixels: np.ndarray, classes: Sequence[int], *, standardization: dict | None = None,
             image_shape: tuple[int, ...] = ()) -> np.ndarray:
    """``S_c(p) = dz_c / dp (N, D)``: :func:`input_gradient` at the model inputs of ``pixels``,
    times ``dx / dp`` (:func:`input_scale`; ``image_shape`` ``(H, W, C)`` is needed only with
    ``standardization``)."""
    x = pixels_to_inputs(np.asarray(pixels, dtype=model.dtype), standardization, image_shape)
    return input_gradient(model, x, classes) * input_scale(standardization, image_shape, model.dtype)


def smoothgrad_noise(seed: int, key: int, samples: int, size: int, sigma: float) -> np.ndarray:
    """The noise ``eps (samples, size)`` SmoothGrad adds to image ``key`` (its test-set index):
    ``Normal(0, sigma^2)``, float64, from ``SeedSequence(seed, spawn_key=(STREAM_SMOOTHGRAD, key))``."""
    rng = np.random.default_rng(stream_seed(seed, STREAM_SMOOTHGRAD, int(key)))
    return rng.normal(0.0, 1.0, size=(samples, size)) * sigma


def smoothgrad(model: Sequential, pixels: np.ndarray, classes: Sequence[int], keys: Sequence[int], samples: int, *,
               noise: float = DEFAULT_NOISE, seed: int = 0, standardization: dict | None = None,
               image_shape: tuple[int, ...] = ()) -> np.ndarray:
    """``SG_c(p) (N, D)``: the mean of :func:`saliency` over ``samples`` noisy copies of each row of
    ``pixels`` (the module docstring's formula), for its class ``classes[i]``, with the noise of
    :func:`smoothgrad_noise` keyed by ``keys[i]``."""
    check_smoothing(samples, noise)
    pixels = np.asarray(pixels, dtype=np.float64)
    out = np.empty(pixels.shape, dtype=model.dtype)
    for i, (p, c, key) in enumerate(zip(pixels, classes, keys)):
        sigma = noise * float(p.max() - p.min())
        noisy = p + smoothgrad_noise(seed, key, samples, p.size, sigma)
        grads = saliency(model, noisy, [c] * samples, standardization=standardization, image_shape=image_shape)
        out[i] = grads.mean(axis=0, dtype=np.float64)
    return out


def check_smoothing(samples: int, noise: float) -> None:
    """A :class:`ParameterError` unless ``samples >= 1`` (an integer) and ``0 <= noise`` (finite)."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ParameterError("samples", f"must be an integer >= 1, got {samples!r}")
    if not (isinstance(noise, (int, float)) and np.isfinite(noise) and noise >= 0):
        raise ParameterError("noise", f"must be a finite number >= 0 (a fraction of the pixel range), got {noise!r}")


def top_losses(z: np.ndarray, labels: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The ``k`` rows of highest cross-entropy, highest first (ties: the lower index first):
    ``index``, ``loss``, ``true``, ``predicted`` and ``confidence`` (the predicted class's
    probability), arrays of length ``min(k, N)``."""
    losses = sample_losses(z, labels)
    order = np.argsort(-losses, kind="stable")[:k]
    probabilities = softmax(z[order])
    predicted = probabilities.argmax(axis=1)
    return {"index": order, "loss": losses[order], "true": np.asarray(labels)[order], "predicted": predicted,
            "confidence": probabilities[np.arange(len(order)), predicted]}


# ----------------------------------------------------------------------------- the whole inspection

#: Inputs whose shorter side is below this many pixels are features, not images (a 1xD CSV row).
MIN_IMAGE_SIDE = 5


def is_image(image_shape: tuple[int, ...]) -> bool:
    """Whether inputs of shape ``(H, W, C)`` are images (both sides at least :data:`MIN_IMAGE_SIDE`):
    only then are weights, activations and saliency maps drawn as pictures."""
    return min(image_shape[:2]) >= MIN_IMAGE_SIDE


def block_names(spec) -> list[str]:
    """``hidden 1: 533 units (relu)`` for each hidden block (a dense layer and the layers up to the
    next one), as the activation figure titles its columns."""
    from nnscratch.model.registry import LAYER_KINDS

    dense = dense_layers(spec)
    names = []
    for k, (start, stop) in enumerate(zip(dense[:-1], dense[1:])):
        parts = [LAYER_KINDS[layer.kind].short(layer.args) or layer.kind for layer in spec.layers[start + 1:stop]]
        width = spec.layers[start].args["out_features"]
        names.append(f"hidden {k + 1}: {width} units" + (f"\n({', '.join(parts)})" if parts else ""))
    return names


@dataclass(eq=False)
class Inspection:
    """Everything ``nnscratch inspect`` draws, as arrays (see the module docstring for each).

    ``logits (N, C)`` of the whole test set; ``weights (U, D)`` (:func:`first_layer_weights`),
    ``units`` and ``units_how`` (:func:`first_layer_units`: those drawn), ``unused (H, W)`` (pixels
    the same in every test image, whose weights never act); ``scores (C, U)`` and
    ``top_units (C, k)`` of the first hidden block (None without a hidden layer); ``class_means``
    uint8 ``(C, H, W, C_img)``; for the chosen test ``images``: ``hidden`` (each block's output),
    ``probs``, ``predicted``, ``confidence``, ``saliency`` and ``smoothgrad`` (``(n, D)``, the
    predicted class; None with ``smooth=0``); ``top`` (:func:`top_losses`).
    Without images (:func:`is_image`) only ``logits`` and ``top`` are filled.
    """

    image_shape: tuple[int, int, int]
    logits: np.ndarray
    top: dict
    images: list[int] = field(default_factory=list)
    weights: np.ndarray | None = None
    units: np.ndarray | None = None
    units_how: str = ""
    unused: np.ndarray | None = None
    scores: np.ndarray | None = None
    top_units: np.ndarray | None = None
    class_means: np.ndarray | None = None
    hidden: list[np.ndarray] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    probs: np.ndarray | None = None
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    saliency: np.ndarray | None = None
    smoothgrad: np.ndarray | None = None
    settings: dict = field(default_factory=dict)


def inspect_model(spec, state: dict[str, np.ndarray], test_images: np.ndarray, test_labels: np.ndarray, *,
                  standardization: dict | None = None, dtype=np.float32, images: Sequence[int] = (0,),
                  smooth: int = 50, noise: float = DEFAULT_NOISE, seed: int = 0, top: int = 16, units: int = 6,
                  show: int = 64) -> Inspection:
    """Compute every part of the inspection of the model ``(spec, state)`` on the test set
    (uint8 ``test_images (N, H, W, C)``, ``test_labels (N,)``), in evaluation mode, in ``dtype``.

    ``images``: the test indices of the activation patterns and saliency maps; ``smooth``,
    ``noise``, ``seed``: SmoothGrad's samples (0: none), noise fraction and noise seed; ``top``:
    how many top losses; ``units``: top units per class; ``show``: first-layer units drawn."""
    from nnscratch.data.preprocess import to_features

    if smooth:
        check_smoothing(smooth, noise)
    image_shape = tuple(int(v) for v in test_images.shape[1:])
    image_shape = image_shape if len(image_shape) == 3 else (*image_shape, 1)
    model = eval_model(spec, state, dtype)
    pixels_all = to_features(test_images, dtype)
    x = pixels_to_inputs(pixels_all, standardization, image_shape)
    z = logits(model, x)
    result = Inspection(image_shape, z, top_losses(z, test_labels, top),
                        settings={"smooth": smooth, "noise": noise, "seed": seed, "units": units, "show": show})
    if not is_image(image_shape):
        return result
    num_classes = spec.num_classes
    result.images = [int(i) for i in images]
    result.weights = first_layer_weights(model)
    result.units, result.units_how = first_layer_units(result.weights, show)
    result.unused = np.all(test_images == test_images[:1], axis=(0, 3))  # (H, W): the same in every test image
    result.class_means = np.stack([np.round(test_images[test_labels == c].mean(axis=0)).astype(np.uint8)
                                   if np.any(test_labels == c) else np.zeros(test_images.shape[1:], np.uint8)
                                   for c in range(num_classes)])
    if len(dense_layers(spec)) > 1:
        result.scores = class_unit_scores(hidden_outputs(model, x, blocks=1)[0], test_labels, num_classes)
        result.top_units = top_units(result.scores, units)
    chosen = np.asarray(result.images, dtype=np.int64)
    result.hidden = hidden_outputs(model, x[chosen])
    result.layer_names = block_names(spec)
    result.probs = softmax(z[chosen])
    result.predicted = result.probs.argmax(axis=1)
    result.confidence = result.probs[np.arange(len(chosen)), result.predicted]
    kwargs = {"standardization": standardization, "image_shape": image_shape}
    result.saliency = saliency(model, pixels_all[chosen], result.predicted, **kwargs)
    if smooth:
        result.smoothgrad = smoothgrad(model, pixels_all[chosen], result.predicted, chosen, smooth, noise=noise,
                                       seed=seed, **kwargs)
    return result
