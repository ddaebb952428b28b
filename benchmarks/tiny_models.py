"""The tiny 28x28x1, 10-class models that `benchmarks/export.py`,
`benchmarks/quantization.py` and the export tests export: every builder of
`keras_attn.models` (and RAM), small enough to train and convert in
seconds; `trained` trains one briefly on real images, as the
quantized-parity tests and `benchmarks/quantization.py` do. The benchmarks
own these fixtures; the tests import them from here."""

from functools import partial

import keras

from keras_attn import models

SHAPE = (28, 28, 1)
# Each builder takes keyword overrides of its arguments (`build(name,
# width=0.25)`), so a benchmark can measure the same model wider.
BUILDERS = {
    "se_resnet": partial(models.resnet, SHAPE, 10, 20, attention="se"),
    "cbam_resnet": partial(models.resnet, SHAPE, 10, 20, attention="cbam"),
    "ltpa_pc_concat": partial(models.ltpa_vgg, SHAPE, 10, width=0.0625,
                              global_dim=32),
    "ltpa_dp_indep": partial(models.ltpa_vgg, SHAPE, 10, compatibility="dp",
                             head="indep", width=0.0625, global_dim=32),
    "attention56": partial(models.residual_attention_network, SHAPE, 10,
                           width=0.0625),
    "stn": partial(models.stn_classifier, SHAPE, 10),
    "aa_wrn": partial(models.aa_wide_resnet, SHAPE, 10, depth=10, width=1,
                      num_heads=2, min_key_dims_per_head=2),
    "aa_resnet": partial(models.aa_resnet, SHAPE, 10, depth=18,
                         augmented_stages=(3, 4), num_heads=2,
                         min_key_dims_per_head=2),
    "sasa_resnet": partial(models.sasa_resnet, SHAPE, 10, width=0.125,
                           kernel_size=3, num_heads=2),
    "ram": None,  # built by `build`
}


def build(name, **overrides):
    """The untrained model `name`, seeded (RAM built for 28x28x1), with
    `overrides` of its builder's keyword arguments."""
    keras.utils.set_random_seed(0)
    if name != "ram":
        return BUILDERS[name](**overrides)
    if overrides:
        raise ValueError(f"build: RAM takes no overrides, got {overrides}")
    from keras_attn.ram import RecurrentAttentionModel

    model = RecurrentAttentionModel(10, num_glimpses=2, glimpse_size=8,
                                    num_scales=2)
    model.build((None, *SHAPE))
    return model


def train_images(count=2048):
    """The first `count` Fashion-MNIST train images, float32 in [0, 1],
    and their labels."""
    from keras_attn.data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("train")
    return images[:count, ..., None].astype("float32") / 255.0, labels[:count]


def reestimate_batch_norm(model, images, batch_size=64):
    """Set every BatchNorm's moving statistics to their average over the
    batches of `images` (precise BN). After 64 steps at momentum 0.99 they
    are still mostly their initial values, and some of these models then
    predict one class for every image in inference mode: top-1 agreement
    with such a model is vacuous."""
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for i, start in enumerate(range(0, len(images), batch_size)):
        for layer in layers:
            layer.momentum = i / (i + 1)  # a running mean of the batches
        model(images[start:start + batch_size], training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def trained(name, epochs=2, count=2048, **overrides):
    """`name` trained for `epochs` epochs on `count` real images, then its
    BatchNorm statistics re-estimated. The default (2 epochs, 2,048
    images, what the export tests use) is long enough that predictions are
    not coin flips, which would make top-1 agreement meaningless (test
    accuracy 0.4-0.8). `overrides`: as for `build`."""
    model = build(name, **overrides)
    images, labels = train_images(count)
    if name == "ram":
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0)
    reestimate_batch_norm(model, images[:1024])
    return model
