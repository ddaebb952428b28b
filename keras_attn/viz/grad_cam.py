"""Grad-CAM: class activation maps from gradients, for any conv feature map.

Paper: Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
https://arxiv.org/abs/1610.02391 (Sec. 3, Eq. 1 and 2).

For the feature map `A` of shape `(B, h, w, K)` of layer `layer_name` and the
class score `y^c` (the pre-softmax logit), Eq. 1 weights every channel by its
spatially averaged gradient, `alpha_k^c = 1 / (h w) sum_ij dy^c / dA^k_ij`,
and Eq. 2 keeps the positive part of the weighted sum,
`L^c = ReLU(sum_k alpha_k^c A^k)`. The `(B, h, w)` map is then resized to the
image (bilinear, `keras.ops.image.resize`) and divided by its maximum, one
image at a time, so it lies in `[0, 1]`.

    cam = grad_cam(model, images, "stage3_block2_conv2")  # (B, H, W)
    cam = grad_cam(model, images, "conv2", class_index=[3, 1, 0])
    figure = keras_attn.viz.overlay_maps(images, [cam], "cam.png")

Deviations, stated plainly:

- The score is the output of the layer named `"logits"` when the model has
  one (every `keras_attn.models` builder ends in Dense `"logits"` and a
  float32 softmax `"probabilities"`), as the paper asks for the score
  "before the softmax"; otherwise the model's (first) output is used as is.
- Gradients are taken with the backend's own autodiff: `tf.GradientTape`
  under TensorFlow, `torch.autograd.grad` under PyTorch. JAX cannot take a
  gradient with respect to an intermediate tensor of a functional model
  without rebuilding the graph, so the JAX backend raises
  `NotImplementedError`.
- Normalisation divides by the per-image maximum (the ReLU already makes the
  minimum `>= 0`; zero keeps meaning "no positive evidence"). An image whose
  map is zero everywhere stays zero.
- The model runs in inference mode (`training=False`); gradients and the map
  are computed in float32 even under mixed precision.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _fail(argument, received, allowed):
    raise ValueError(
        f"grad_cam: invalid `{argument}`; expected {allowed}. "
        f"Received: {argument}={received!r}"
    )


def _feature_tensor(model, layer_name):
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        convs = [
            layer.name for layer in model.layers
            if len(getattr(_first_output(layer), "shape", ())) == 4
        ]
        shown = ", ".join(repr(n) for n in (convs[-6:] or names[-6:]))
        _fail("layer_name", layer_name,
              f"the name of a layer of model {model.name!r} with a 4D "
              f"output, for example one of {shown}")
    layer = model.get_layer(layer_name)
    tensor = _first_output(layer)
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) != 4:
        _fail("layer_name", layer_name,
              "a layer whose output is a 4D (batch, height, width, channels)"
              f" feature map; {layer_name!r} outputs shape {shape}")
    return tensor


def _first_output(layer):
    # keras_attn layers called with their maps on return (y, map, ...):
    # the feature map is y.
    try:
        output = layer.output
    except (AttributeError, ValueError):  # never called, or shared
        return None
    if isinstance(output, (list, tuple)):
        output = output[0]
    return output


def _score_tensor(model):
    if "logits" in [layer.name for layer in model.layers]:
        return model.get_layer("logits").output
    output = model.outputs[0]
    return output


def _class_indices(class_index, scores):
    batch, classes = scores.shape
    if class_index is None:
        return np.argmax(scores, axis=-1)
    indices = np.asarray(class_index)
    if not np.issubdtype(indices.dtype, np.integer) or indices.dtype == bool:
        _fail("class_index", class_index, "None, an integer, or one integer "
              "per image")
    if indices.ndim == 0:
        indices = np.full((batch,), int(indices))
    if indices.shape != (batch,) or (indices < 0).any() or (
        indices >= classes
    ).any():
        _fail("class_index", class_index,
              f"None, an integer in [0, {classes}), or shape ({batch},) of "
              "such integers")
    return indices


def _features_and_gradients(grad_model, images, class_index):
    """`(A, dy^c/dA, c)` as float32 NumPy arrays."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            features, scores = grad_model([x], training=False)
            tape.watch(features)
            scores = tf.cast(tf.reshape(scores, (tf.shape(scores)[0], -1)),
                             "float32")
            indices = _class_indices(class_index, scores.numpy())
            picked = tf.reduce_sum(
                scores * tf.one_hot(indices, scores.shape[-1])
            )
        grads = tape.gradient(picked, features)
        return (np.asarray(features, np.float32), np.asarray(grads, np.float32),
                indices)
    if backend == "torch":
        import torch

        x = ops.convert_to_tensor(images)
        with torch.enable_grad():
            features, scores = grad_model([x], training=False)
            scores = scores.reshape(scores.shape[0], -1).float()
            indices = _class_indices(
                class_index, scores.detach().cpu().numpy()
            )
            one_hot = torch.nn.functional.one_hot(
                torch.as_tensor(indices, device=scores.device),
                scores.shape[-1],
            ).float()
            (grads,) = torch.autograd.grad((scores * one_hot).sum(), features)
        return (features.detach().float().cpu().numpy(),
                grads.float().cpu().numpy(), indices)
    raise NotImplementedError(
        f"grad_cam supports the TensorFlow and PyTorch backends, not "
        f"{backend!r}: gradients with respect to an intermediate tensor need "
        "tf.GradientTape or torch.autograd."
    )


def grad_cam(model, images, layer_name, class_index=None):
    """Grad-CAM map of every image for one class, at the image resolution.

    Args:
        model: a functional `keras.Model` (for example from
            `keras_attn.models`) mapping images to class scores.
        images: `(B, H, W, C)` array the model accepts.
        layer_name: name of the layer whose 4D output `(B, h, w, K)` is the
            feature map `A` (the paper uses the last convolutional layer).
            For a layer returning several tensors (a keras_attn layer called
            with its maps on) the first one is used.
        class_index: `None` (each image's predicted class, the argmax of the
            score), an integer (the same class for every image), or `B`
            integers.

    Returns:
        float32 NumPy array `(B, H, W)` in `[0, 1]`.

    Raises:
        ValueError: unknown `layer_name`, a layer without a 4D output, or a
            bad `class_index`.
        NotImplementedError: on the JAX backend.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        _fail("images", f"array of shape {images.shape}",
              "shape (batch, height, width, channels)")
    features = _feature_tensor(model, layer_name)
    grad_model = keras.Model(model.inputs, [features, _score_tensor(model)])
    a, grads, _ = _features_and_gradients(grad_model, images, class_index)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # Eq. 1: (B, 1, 1, K)
    cam = np.maximum((weights * a).sum(axis=-1), 0.0)  # Eq. 2: (B, h, w)
    height, width = images.shape[1:3]
    cam = ops.image.resize(cam[..., None], (height, width),
                           interpolation="bilinear")
    cam = np.asarray(ops.convert_to_numpy(cam), np.float32)[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0),
                    0.0).astype(np.float32)
