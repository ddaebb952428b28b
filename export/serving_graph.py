"""The serving graph every export shares: images -> probabilities, classes
and attention maps, computed in one TensorFlow graph.

`ServingGraph(model)` wraps a keras_attn classifier (any functional model
`images (B, H, W, C) -> (B, K)`) or a `keras_attn.ram.
RecurrentAttentionModel` and gives `serving_graph(images)`, a function of
float32 images in [0, 1] returning a dict:

- `probabilities` float32 `(B, K)`: the model's softmax output (a model
  that outputs logits gets a softmax here; see `outputs`), float32 even
  under mixed precision.
- `classes` int64 `(B,)`: `argmax` of the probabilities.
- `attention_maps` float32 `(B, M, H, W)` (only when the model has spatial
  attention maps): each map of the model reduced to one `(h, w)` map per
  image exactly as `keras_attn.viz.reduce_attention` does, resized
  bilinearly (half-pixel centres, no antialiasing, as
  `keras_attn.viz.plotting.resize_bilinear`) to the input
  `H x W`, stacked in model order (`names` lists them). Channel gates (SE,
  CBAM `M_c`) and a SpatialTransformer's `theta` are not spatial; they are
  listed in `skipped`.
- `locations` float32 `(B, T, 2)` (RAM only, instead of attention maps):
  the `(x, y)` glimpse centres in `[-1, 1]` of the mean policy, as
  `RecurrentAttentionModel.glimpse_trace`.

Only TensorFlow ops with TFLite builtin kernels are used, so the same graph
goes to a SavedModel and to a TFLite flatbuffer.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_attn.ops.map_reduction import reduce_attention_map

OUTPUTS = ("auto", "probabilities", "logits")


def _fail(argument, value, expected):
    raise ValueError(
        f"ServingGraph: invalid `{argument}`; expected {expected}. "
        f"Received: {argument}={value!r}"
    )


def _is_ram(model):
    from keras_attn.ram import RecurrentAttentionModel

    return isinstance(model, RecurrentAttentionModel)


def _static_shape(model, input_shape):
    if input_shape is not None:
        shape = tuple(input_shape)
    elif _is_ram(model):
        shape = model._image_shape
    else:
        shape = tuple(model.inputs[0].shape[1:])
    if (shape is None or len(shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in shape)):
        _fail("input_shape", input_shape if input_shape else shape,
              "a static (height, width, channels) for the exported "
              "signature; the model's own input shape has unknown sizes, "
              "pass input_shape=(H, W, C)")
    return shape


def _resize(maps, height, width):
    import tensorflow as tf

    if tuple(maps.shape[1:3]) == (height, width):
        return maps
    resized = tf.image.resize(maps[..., None], (height, width),
                              method="bilinear", antialias=False)
    return resized[..., 0]


def run_batched(function, images, batch_size=250):
    """`function(images=batch)` over `images` in batches of `batch_size`,
    its output dict concatenated into NumPy arrays."""
    import tensorflow as tf

    images = np.asarray(images, "float32")
    parts = [
        {k: v.numpy() for k, v in function(
            images=tf.constant(images[i:i + batch_size])).items()}
        for i in range(0, len(images), batch_size)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class ServingGraph:
    """The graph shared by the SavedModel and the TFLite exports.

    Args:
        model: a functional keras_attn classifier `(B, H, W, C) -> (B, K)`,
            or a `RecurrentAttentionModel` (exported on its mean policy,
            with `locations` instead of attention maps).
        input_shape: `(H, W, C)`; needed only when the model's own input
            has unknown sizes.
        outputs: what the model's output is: `"probabilities"`, `"logits"`
            (a softmax is added), or `"auto"`: probabilities when the last
            layer is a softmax, otherwise decided by probing the model on
            random images (non-negative rows summing to 1).

    Attributes:
        core: a `keras.Model` images -> `[model output, *raw maps]` sharing
            the model's weights (track it when saving).
        input_shape: `(H, W, C)`.
        num_classes: `K`.
        names: names of the attention maps in `attention_maps`, in order
            (as in `keras_attn.models.attention_outputs`).
        kinds: the kind of each of them (see
            `keras_attn.ops.map_reduction`).
        sizes: `(h, w)` of each map before resizing.
        skipped: `{name: kind}` of the non-spatial maps left out.
        extra_output: `"attention_maps"`, `"locations"` or `None`.
        applies_softmax: whether `probabilities` is a softmax added here.
    """

    def __init__(self, model, input_shape=None, outputs="auto"):
        if not isinstance(model, keras.Model):
            _fail("model", type(model).__name__, "a keras.Model")
        if outputs not in OUTPUTS:
            _fail("outputs", outputs, f"one of {list(OUTPUTS)}")
        self.model = model
        self.input_shape = _static_shape(model, input_shape)
        self.names, self.kinds, self.sizes, self.skipped = [], [], [], {}
        self._grids = []
        self._frozen, self._traced = {}, {}
        if _is_ram(model):
            self._build_ram(model)
        else:
            self._build_classifier(model)
        self.num_classes = int(self.core.outputs[0].shape[-1])
        if _is_ram(model):
            self.applies_softmax = False
        elif outputs == "auto":
            self.applies_softmax = not self._outputs_probabilities()
        else:
            self.applies_softmax = outputs == "logits"

    # ------------------------------------------------------------------
    # Construction

    def _build_ram(self, model):
        if not model.built:
            model.build((None, *self.input_shape))
        inputs = keras.Input(self.input_shape, name="images")
        out = model.unroll(inputs, "mean", baselines=False)
        probs = keras.ops.softmax(out["logits"], axis=-1)
        self.core = keras.Model(inputs, [probs, out["locations"]],
                                name=f"{model.name}_serving")
        self.extra_output = "locations"
        self.num_glimpses = int(model.num_glimpses)

    def _build_classifier(self, model):
        from keras_attn.models import attention_outputs
        from keras_attn.models.attention_maps import attention_map_layers
        from keras_attn.viz.attention_maps import map_kind

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            _fail("model", model.name,
                  "a functional model with one image input and one output "
                  f"(got {len(model.inputs)} inputs, "
                  f"{len(model.outputs)} outputs)")
        if len(model.outputs[0].shape) != 2:
            _fail("model", model.name,
                  "an output of shape (batch, num_classes); got "
                  f"{tuple(model.outputs[0].shape)}")
        symbolic = attention_outputs(model)
        tensors = []
        for name, layer, index in attention_map_layers(model):
            tensor = symbolic[name]
            kind = map_kind(layer, index, tuple(tensor.shape))
            if kind in ("channel", "none"):
                self.skipped[name] = kind
                continue
            grid = None
            if kind == "global":
                grid = tuple(int(d) for d in layer.output[0].shape[1:3])
            self.names.append(name)
            self.kinds.append(kind)
            self._grids.append(grid)
            self.sizes.append(grid if grid else
                              tuple(int(d) for d in tensor.shape[1:3]))
            tensors.append(tensor)
        self.core = keras.Model(model.inputs[0], [model.outputs[0], *tensors],
                                name=f"{model.name}_serving")
        self.extra_output = "attention_maps" if tensors else None

    def layers_of(self, class_names):
        """Names of the model's layers, nested ones included, whose class
        name is in `class_names` (for leaving them in float in an int8
        file, see `export.int8_ranges.float_layers_of`)."""
        return [layer.name for layer in self.model._flatten_layers(
            include_self=False, recursive=True)
            if type(layer).__name__ in class_names]

    def nested_layers(self, class_names, attributes):
        """`{layer name: [nested layer names]}` for the model's layers whose
        class name is in `class_names` and keys `attributes`, which maps a
        class name to the attributes holding those nested layers (see
        `export.int8_ranges.int8_sublayers_of`)."""
        found = {}
        for layer in self.model._flatten_layers(include_self=False,
                                                recursive=True):
            kind = type(layer).__name__
            if kind in class_names and kind in attributes:
                found[layer.name] = [
                    getattr(layer, a).name for a in attributes[kind]
                    if getattr(layer, a, None) is not None]
        return found

    def _outputs_probabilities(self):
        last = self.model.layers[-1]
        if getattr(last, "activation", None) is keras.activations.softmax:
            return True
        rng = np.random.default_rng(0)
        probe = rng.random((4, *self.input_shape)).astype("float32")
        out = keras.ops.convert_to_numpy(
            self.model(probe, training=False)
        ).astype("float64")
        return bool(np.all(out >= 0)
                    and np.allclose(out.sum(-1), 1.0, atol=1e-3))

    # ------------------------------------------------------------------
    # The graph

    def __call__(self, images):
        """`images` float32 `(B, H, W, C)` in [0, 1] -> the output dict
        (TensorFlow tensors; call inside or outside a `tf.function`)."""
        import tensorflow as tf

        outs = self.core(images, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        probs = tf.cast(outs[0], tf.float32)
        if self.applies_softmax:
            probs = tf.nn.softmax(probs, axis=-1)
        result = {
            "probabilities": probs,
            "classes": tf.argmax(probs, axis=-1, output_type=tf.int64),
        }
        if self.extra_output == "locations":
            result["locations"] = tf.cast(outs[1], tf.float32)
        elif self.extra_output == "attention_maps":
            height, width = self.input_shape[:2]
            maps = []
            for raw, kind, grid in zip(outs[1:], self.kinds, self._grids,
                                       strict=True):
                reduced = reduce_attention_map(raw, kind, grid)
                maps.append(_resize(reduced, height, width))
            result["attention_maps"] = tf.stack(maps, axis=1)
        return result

    def output_specs(self, batch=None):
        """`{output name: (shape, dtype)}` of `__call__`, batch axis
        `batch` (`None`: dynamic)."""
        height, width = self.input_shape[:2]
        specs = {
            "probabilities": ([batch, self.num_classes], "float32"),
            "classes": ([batch], "int64"),
        }
        if self.extra_output == "locations":
            specs["locations"] = ([batch, self.num_glimpses, 2], "float32")
        elif self.extra_output == "attention_maps":
            specs["attention_maps"] = (
                [batch, len(self.names), height, width], "float32"
            )
        return specs

    def function(self, batch=None):
        """A `tf.function` `images -> dict` with input signature
        `images` float32 `(batch, H, W, C)`."""
        import tensorflow as tf

        spec = tf.TensorSpec((batch, *self.input_shape), tf.float32,
                             name="images")

        def serve(images):
            return self(images)

        return tf.function(serve, input_signature=[spec], autograph=False)

    def frozen(self, batch=None):
        """`images -> dict` as a `tf.function` whose weights are constants.

        The graph is traced once per `batch` and its variables are folded
        into constants (`convert_variables_to_constants_v2`, the same
        freezing the TFLite converter does): the SavedModel and the TFLite
        file then hold one plain graph, with no Keras objects to serialize
        (writing a model with hundreds of variables otherwise takes tens of
        seconds) and nothing that needs keras_attn to load.
        """
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        if batch in self._frozen:
            return self._frozen[batch]
        traced = self.function(batch)
        concrete = traced.get_concrete_function()
        constant = convert_variables_to_constants_v2(concrete)
        # The frozen function returns a flat list in the order of the
        # sorted output names; give the dict back its names.
        keys = sorted(self.output_specs())
        spec = tf.TensorSpec((batch, *self.input_shape), tf.float32,
                             name="images")

        def serve(images):
            return dict(zip(keys, constant(images), strict=True))

        self._frozen[batch] = tf.function(serve, input_signature=[spec],
                                          autograph=False)
        self._traced[batch] = traced
        return self._frozen[batch]

    def tflite_converter(self, batch=None):
        """A `tf.lite.TFLiteConverter` of the frozen graph (unconfigured;
        `export.tflite_convert` and `export.int8_ranges` set it up). With
        a trackable object the converter keeps the function's signature
        (`serving_default`, input and output names) in the flatbuffer."""
        import tensorflow as tf

        holder = tf.Module()
        holder.serving_default = self.frozen(batch)
        return tf.lite.TFLiteConverter.from_concrete_functions(
            [holder.serving_default.get_concrete_function()], holder
        )

    def reference(self, images, batch_size=250):
        """The outputs of the (unfrozen) graph on NumPy `images`, as a dict
        of NumPy arrays: the Keras model's own computation."""
        traced = self._traced.get(None) or self.function(None)
        self._traced[None] = traced
        return run_batched(traced, images, batch_size)

    def decode_images(self, image_bytes):
        """Encoded PNG/JPEG/BMP/GIF/WebP strings `(B,)` -> float32
        `(B, H, W, C)` in [0, 1]: decoded to C channels, resized bilinearly
        to H x W (when the size differs), scaled by the maximum of the
        image's dtype (`tf.image.convert_image_dtype`).

        PNG decodes straight to C channels (libpng's conversion). The other
        formats decode to their own channels (TensorFlow's BMP, GIF and WebP
        decoders and a CMYK JPEG cannot give 1 channel), then lose an alpha
        channel and go to gray (`tf.image.rgb_to_grayscale`) or to RGB; a GIF
        gives its first frame."""
        import tensorflow as tf

        height, width, channels = self.input_shape

        def to_channels(image):
            image = tf.image.convert_image_dtype(image, tf.float32)
            native = tf.shape(image)[-1]
            # Gray + alpha -> gray, RGBA -> RGB.
            image = tf.cond(tf.equal(native % 2, 0),
                            lambda: image[..., :native - 1], lambda: image)
            image = tf.cond(
                tf.equal(tf.shape(image)[-1], 1),
                lambda: tf.image.grayscale_to_rgb(image[..., :1]),
                lambda: image[..., :3])  # now RGB
            image = tf.ensure_shape(image, (None, None, 3))
            if channels == 1:
                return tf.image.rgb_to_grayscale(image)
            return image

        def decode(data):
            if channels in (1, 3):
                is_png = tf.equal(tf.strings.substr(data, 0, 4), b"\x89PNG")
                image = tf.cond(
                    is_png,
                    lambda: tf.image.convert_image_dtype(tf.io.decode_image(
                        data, channels=channels, expand_animations=False),
                        tf.float32),
                    lambda: to_channels(tf.io.decode_image(
                        data, channels=0, expand_animations=False)))
            else:
                image = tf.image.convert_image_dtype(tf.io.decode_image(
                    data, channels=channels, expand_animations=False),
                    tf.float32)
            image = tf.ensure_shape(image, (None, None, channels))
            size = tf.shape(image)[:2]
            image = tf.cond(
                tf.reduce_all(tf.equal(size, [height, width])),
                lambda: image,
                lambda: tf.image.resize(image, (height, width),
                                        method="bilinear",
                                        antialias=False),
            )
            return tf.ensure_shape(image, (height, width, channels))

        return tf.map_fn(
            decode, image_bytes,
            fn_output_signature=tf.TensorSpec((height, width, channels),
                                              tf.float32),
        )
