"""Does each attention mechanism do what its paper says? Measured, seed by seed.

Every *piece* trains one mechanism and its own baseline (same backbone,
width, optimiser, schedule, data, budget and seeds: the seed fixes the
initialisation, the data order and the generated canvases) on a task where
the paper says attention should help, evaluates both on the same test
images, and, on the canvas tasks, asks whether the maps find the object
(pointing game, share of map mass in the object's box; Grad-CAM of both
arms and a centre prior as floors; the STN's read box against the true box;
RAM's glimpse hits).

    python -m benchmarks.fidelity --profile smoke            # seconds
    python -m benchmarks.fidelity --only se --seeds 3        # one piece
    python -m benchmarks.fidelity --profile full --jobs 2    # everything
    python -m benchmarks.fidelity_report                     # docs/results.md

Results merge into `benchmarks/results/fidelity.json` (`fidelity_smoke.json`
for the smoke profile): a piece replaces only its own rows, and rewrites
them after every finished seed, so a run killed half-way keeps the seeds it
finished. Every seed is reported; none is dropped.

Budgets (the `full` profile) are scaled to a 2-core CPU (measured: 8 to
104 minutes per 3-seed piece on one core; the report gives each piece's
wall time): the first `train_images` training images of
Fashion-MNIST, redrawn onto fresh canvases every epoch for the canvas
tasks; Adam with a cosine decay to zero over the whole run (so the last
epochs' loss flattens by construction, and the curves show where it got
to); batch 128. Short runs leave BatchNorm's moving statistics partly at
their initial values, so after training they are re-estimated over 20
training batches (`precise_batch_norm`, both arms); the accuracy with the
moving statistics is kept too. See `PIECES` for each piece.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import sys
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PROFILES = ("smoke", "full")
TEST_SEED = 10_000  # the test canvases: the same for every seed and piece
PICTURE_IMAGES = 6
LOCALIZATION_IMAGES = 500


@dataclasses.dataclass(frozen=True)
class Budget:
    train_images: int
    test_images: int
    epochs: int
    batch_size: int = 128
    steps_per_epoch: int | None = None  # caps steps (smoke only)
    # Inference batch (validation, test): BN runs on its moving statistics
    # there, so it changes memory, not accuracy.
    eval_batch_size: int = 256


@dataclasses.dataclass(frozen=True)
class Piece:
    """One mechanism against its baseline(s) on one task."""

    mechanism: str
    task: str  # fashion_mnist | translated60 | cluttered60 | rts
    model: str  # what the backbone is, said in the JSON and the report
    build: str  # name of a builder in `_BUILDERS`
    baselines: tuple = ("baseline",)  # arms compared against "attention"
    full: Budget = Budget(6_000, 10_000, 6)
    lr: float = 1e-3
    jit: bool = True
    notes: str = ""
    # Tuning (issue 17, item 5): how this piece differs from the piece of
    # the same mechanism and task it re-runs, applied to every arm alike.
    variant: str = ""
    init: str = "default"  # or "zero_last_bn": see `zero_last_batch_norm`
    warmup: float = 0.0  # share of the steps with a linear warm-up from 0
    # Arms trained at once under `--jobs`, at most: each process holds its
    # own arm's memory, and two self-attention arms at these sizes do not
    # fit in 24 GB together.
    max_jobs: int | None = None

    def budget(self, profile):
        return SMOKE if profile == "smoke" else self.full


SMOKE = Budget(256, 64, 1, batch_size=32, steps_per_epoch=2)

# Budgets set from the training images/s of benchmarks/results/models.json,
# aiming at 20-50 minutes per piece on 2 cores. The wall times measured since
# are in the JSON; several pieces take longer (docs/investigation.md).
PIECES = {
    "se": Piece("se", "fashion_mnist", "ResNet-20 (16-32-64)", "resnet_se",
                full=Budget(6_000, 10_000, 6)),
    "cbam": Piece("cbam", "fashion_mnist", "ResNet-20 (16-32-64)",
                  "resnet_cbam", full=Budget(6_000, 10_000, 6)),
    "cbam_cluttered": Piece(
        "cbam", "cluttered60", "ResNet-20 (16-32-64), 60x60", "resnet_cbam",
        full=Budget(2_500, 1_000, 4),
    ),
    "residual_attention": Piece(
        "residual_attention", "fashion_mnist",
        "Attention-56, width 0.25 (32-64-128-256)", "attention56",
        full=Budget(6_000, 10_000, 6),
    ),
    "residual_attention_cluttered": Piece(
        "residual_attention", "cluttered60",
        "Attention-56, width 0.25 (32-64-128-256), 60x60", "attention56",
        full=Budget(2_500, 1_000, 4),
    ),
    "ltpa": Piece(
        "ltpa", "cluttered60",
        "VGG-16-BN width 0.125, pc/concat, g 128, 60x60", "ltpa",
        full=Budget(2_500, 1_000, 4),
    ),
    "stn": Piece("stn", "rts", "ST-CNN / CNN (32-64, fc 128), 42x42", "stn",
                 full=Budget(10_000, 5_000, 5), jit=False),
    "stn_cluttered": Piece(
        "stn", "cluttered60", "ST-CNN / CNN (32-64, fc 128), 60x60", "stn",
        full=Budget(6_000, 2_000, 4), jit=False,
    ),
    "aa": Piece("aa", "fashion_mnist", "AA-WRN-10-2, 4 key dims per head",
                "aa_wrn", full=Budget(2_000, 5_000, 4),
                max_jobs=1),  # 18-21 GB per AA-WRN arm (batch 128)
    "sasa": Piece("sasa", "fashion_mnist", "SASA-ResNet-26 width 0.25",
                  "sasa", full=Budget(2_000, 5_000, 4)),
    # SASA's and AA's own maps on canvases with a known box (issue 17,
    # item 3); their Fashion-MNIST pieces above have no box to score. At
    # 60x60 either attention network trains at 4.7 canvases/s on one core
    # (measured 2026-12-05, batch 32, no XLA; the conv baselines 37 and 74),
    # so the budget is half LTPA's; batch 32 gives 156 updates. Even so a
    # 3-seed piece took 89-104 minutes on one core. XLA is off: slower on
    # this machine for both (benchmarks/results/models.json), and no
    # earlier row to match.
    "sasa_cluttered": Piece(
        "sasa", "cluttered60", "SASA-ResNet-26 width 0.25, 60x60", "sasa",
        full=Budget(1_250, 1_000, 4, batch_size=32, eval_batch_size=64),
        jit=False, max_jobs=1,  # 10.5 GB while it reads its maps
    ),
    "aa_cluttered": Piece(
        "aa", "cluttered60",
        "AA-ResNet-20 (16-32-64), stages 2-3 augmented, 4 key dims per "
        "head, 60x60", "aa_resnet20",
        full=Budget(1_250, 1_000, 4, batch_size=32, eval_batch_size=32),
        jit=False, max_jobs=1,
        notes="holds about 6 GB while it trains, 13 GB while it "
              "reads maps: run it alone",
    ),
    "ram": Piece(
        "ram", "cluttered60",
        "RAM 6 glimpses 12x12x3 scales, RNN 256", "ram",
        baselines=("fc", "cnn"), full=Budget(10_000, 2_000, 5),
    ),
    # Tuning: each re-runs a piece above with one change given to both arms
    # alike; every variant is reported as its own row, none is chosen.
    "se_zero_init": Piece(
        "se", "fashion_mnist", "ResNet-20 (16-32-64)", "resnet_se",
        full=Budget(6_000, 10_000, 6), init="zero_last_bn",
        variant="last BN of every residual branch zero-initialised",
    ),
    "cbam_zero_init": Piece(
        "cbam", "fashion_mnist", "ResNet-20 (16-32-64)", "resnet_cbam",
        full=Budget(6_000, 10_000, 6), init="zero_last_bn",
        variant="last BN of every residual branch zero-initialised",
    ),
    "sasa_heads": Piece(
        "sasa", "fashion_mnist", "SASA-ResNet-26 width 0.25", "sasa_2_heads",
        full=Budget(2_000, 5_000, 4),
        variant="2 heads, not 8: 8-64 channels per head as in the paper's "
                "full-width model (the baseline has no heads: unchanged)",
    ),
    "ltpa_dp": Piece(
        "ltpa", "cluttered60",
        "VGG-16-BN width 0.125, dp/concat, g 128, 60x60", "ltpa_dp",
        full=Budget(2_500, 1_000, 4),
        variant="dot-product compatibility (dp), not parametrised (pc); "
                "the baseline is the same VGG",
    ),
    "ram_long": Piece(
        "ram", "cluttered60",
        "RAM 6 glimpses 12x12x3 scales, RNN 256", "ram",
        baselines=("fc",), full=Budget(10_000, 2_000, 15),
        variant="3x the epochs (15)",
    ),
}


# Tuning pieces that are a piece above with one setting changed.
_WARMUP = ("linear learning-rate warm-up over the first 1/8 of the steps "
           "(the paper warms up; both arms)")
PIECES.update({
    "sasa_warmup": dataclasses.replace(PIECES["sasa"], warmup=0.125,
                                       variant=_WARMUP),
    "aa_warmup": dataclasses.replace(PIECES["aa"], warmup=0.125,
                                     variant=_WARMUP),
    "sasa_lr_low": dataclasses.replace(
        PIECES["sasa"], lr=3e-4,
        variant="learning rate 3e-4, not 1e-3 (both arms)"),
    "sasa_lr_high": dataclasses.replace(
        PIECES["sasa"], lr=3e-3,
        variant="learning rate 3e-3, not 1e-3 (both arms)"),
})


# ----------------------------------------------------------------------------
# Models


def _switch(arm):
    """A builder's `attention`: `True` for the attention arm, `None` (the
    no-attention baseline) otherwise."""
    return True if arm == "attention" else None


def _resnet(attention):
    def build(arm, input_shape, num_classes):
        from keras_attn.models import resnet

        return resnet(input_shape, num_classes, 20,
                      attention=attention if arm == "attention" else None)

    return build


def _attention56(arm, input_shape, num_classes):
    from keras_attn.models import residual_attention_network

    return residual_attention_network(input_shape, num_classes, 56,
                                      attention=_switch(arm),
                                      width=0.25)


def _ltpa(arm, input_shape, num_classes, compatibility="pc"):
    from keras_attn.models import ltpa_vgg

    return ltpa_vgg(input_shape, num_classes, compatibility, "concat",
                    attention=_switch(arm), width=0.125,
                    global_dim=128)


def _stn(arm, input_shape, num_classes):
    from keras_attn.models import stn_classifier

    return stn_classifier(input_shape, num_classes,
                          attention=_switch(arm))


def _aa_wrn(arm, input_shape, num_classes):
    from keras_attn.models import aa_wide_resnet

    return aa_wide_resnet(input_shape, num_classes, 10, 2,
                          attention=_switch(arm),
                          min_key_dims_per_head=4)


def _sasa(arm, input_shape, num_classes, num_heads=8):
    from keras_attn.models import sasa_resnet

    return sasa_resnet(input_shape, num_classes, 26,
                       attention=_switch(arm), width=0.25,
                       num_heads=num_heads)


def _aa_resnet20(arm, input_shape, num_classes):
    # The paper's ImageNet setting (stages 2-3 augmented, not the first):
    # at 60x60 a first-stage layer would hold 3600^2 logits per head.
    from keras_attn.models import aa_resnet

    return aa_resnet(input_shape, num_classes, 20, attention=_switch(arm),
                     min_key_dims_per_head=4)


def _ltpa_dp(arm, input_shape, num_classes):
    return _ltpa(arm, input_shape, num_classes, compatibility="dp")


def _sasa_2_heads(arm, input_shape, num_classes):
    # At width 1/4 the paper's 8 heads get 2-16 channels each; 2 heads get
    # the 8-64 of the paper's full-width model. The widths are unchanged.
    return _sasa(arm, input_shape, num_classes, num_heads=2)


def _ram(arm, input_shape, num_classes, seed=0):
    if arm == "fc":
        from keras_attn.recipes.ram import fc_baseline

        return fc_baseline(input_shape, num_classes)
    if arm == "cnn":
        return _stn("baseline", input_shape, num_classes)
    from keras_attn.ram import RecurrentAttentionModel

    model = RecurrentAttentionModel(num_classes, num_glimpses=6,
                                    glimpse_size=12, num_scales=3,
                                    core="rnn", location_std=0.1,
                                    eval_samples=1, seed=seed)
    model.build((None, *input_shape))
    return model


_BUILDERS = {
    "resnet_se": _resnet("se"),
    "resnet_cbam": _resnet("cbam"),
    "attention56": _attention56,
    "ltpa": _ltpa,
    "ltpa_dp": _ltpa_dp,
    "stn": _stn,
    "aa_wrn": _aa_wrn,
    "sasa": _sasa,
    "sasa_2_heads": _sasa_2_heads,
    "aa_resnet20": _aa_resnet20,
    "ram": _ram,
}


def zero_last_batch_norm(model):
    """Set to zero the scale of the last BN in every residual branch of a
    `keras_attn.models.resnet` (`stage{i}_block{j}_2_bn`, or `_3_bn` in
    bottleneck blocks), so that every block starts as the identity (Goyal
    et al., 2017; timm's `zero_init_last`). The attention sits after that
    BN, so both arms start from the same function. Returns the count."""
    import re

    names = [layer.name for layer in model.layers]
    last = {}
    for name in names:
        match = re.fullmatch(r"(stage\d+_block\d+)_(\d)_bn", name)
        if match:
            block, index = match.groups()
            last[block] = max(last.get(block, ""), index)
    if not last:
        raise ValueError(f"zero_last_batch_norm: {model.name} has no layer "
                         "named stage<i>_block<j>_<k>_bn; expected a "
                         "keras_attn.models.resnet")
    for block, index in last.items():
        bn = model.get_layer(f"{block}_{index}_bn")
        bn.gamma.assign(np.zeros(bn.gamma.shape, "float32"))
    return len(last)


# ----------------------------------------------------------------------------
# Data: NumPy arrays, float32 in [0, 1], (N, S, S, 1)

_CANVAS = {"translated60": (60, 0), "cluttered60": (60, 4)}


def _source(split, count):
    from keras_attn.data import load_fashion_mnist

    x, y = load_fashion_mnist(split)
    return x[:count], y[:count].astype("int32")


def _canvases(task, images, seed, epoch):
    """`(canvases, boxes)` of `images` (uint8 28x28) drawn for the task;
    `boxes` `(N, 4)` [top, left, bottom, right] of the object, or None."""
    from benchmarks import _localization

    if task == "fashion_mnist":
        return images[..., None].astype("float32") / 255.0, None
    if task == "rts":
        from keras_attn.data import rts

        canvases, params = rts(images, 42, seed=seed, epoch=epoch,
                               return_params=True)
        return canvases, np.asarray(params["boxes"], "float64")
    from keras_attn.data import clutter

    size, pieces = _CANVAS[task]
    canvases, params = clutter(images, size, pieces, seed=seed, epoch=epoch,
                               return_params=True)
    boxes = _localization.tight_boxes(images, params["offsets"])
    return canvases, boxes


# ----------------------------------------------------------------------------
# One arm, one seed


def warmup_steps(piece, total_steps):
    """Steps of the linear warm-up: `piece.warmup` of `total_steps`."""
    return int(round(piece.warmup * total_steps))


def schedule_name(piece):
    if not piece.warmup:
        return "Adam, cosine to 0"
    return (f"Adam, linear warm-up from 0 over {piece.warmup:.1%} of the "
            "steps, then cosine to 0")


def learning_rate_schedule(total_steps, lr, warmup=0):
    """Cosine decay to 0 over `total_steps`; with `warmup` steps, Keras'
    own linear warm-up from 0 to `lr` first, then the cosine over the
    remaining steps."""
    import keras

    if not warmup:
        return keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=max(1, total_steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), warmup_target=lr,
        warmup_steps=warmup)


def _compile(model, budget, steps, lr, jit, ram, warmup=0):
    import keras

    optimizer = keras.optimizers.Adam(
        learning_rate_schedule(steps * budget.epochs, lr, warmup))
    if ram:  # RAM carries its own hybrid loss and metrics
        model.compile(optimizer=optimizer, jit_compile=jit)
    else:
        model.compile(optimizer=optimizer,
                      loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=jit)


def _batch_norms(model):
    import keras

    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def precise_batch_norm(model, images, batch_size, batches=20):
    """Re-estimate every BatchNorm's moving statistics as the plain average
    over `batches` training batches, with the trained weights fixed.

    Short runs leave the moving averages (momentum 0.99) partly at their
    initial values, which puts some models at chance on the test set while
    they fit the training set (LTPA and Attention-56 after one short
    epoch, measured 2026-12-02). Both arms
    get the same treatment; the JSON keeps the accuracy with the moving
    averages too (`test_accuracy_moving_bn`).
    """
    layers = _batch_norms(model)
    if not layers:
        return False
    saved = [layer.momentum for layer in layers]
    try:
        for i in range(min(batches, len(images) // batch_size)):
            # Cumulative mean: batch i gets weight 1 / (i + 1).
            for layer in layers:
                layer.momentum = i / (i + 1)
            model(images[i * batch_size:(i + 1) * batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return True


def _last_feature_layer(model):
    """Name of the deepest 4-D feature map before global pooling: where
    Grad-CAM looks (the paper's choice: the last conv features)."""
    name = None
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if (shape is not None and len(shape) == 4 and shape[1] and shape[1] > 1
                and not type(layer).__module__.startswith("keras_attn")):
            name = layer.name
    return name


# Test canvases per forward pass when maps are read: all 1,000 canvases of
# Attention-56 at 60x60 in one call held 23 GB (the process was killed);
# 25 AA-ResNet-20 canvases at 60x60 return 0.6 GB of (HW)^2 weights.
MAP_CHUNK = 25


def _in_chunks(function, images):
    """`function` over `images` `MAP_CHUNK` at a time, the results joined:
    arrays along axis 0, dicts of arrays key by key."""
    parts = [function(images[i:i + MAP_CHUNK])
             for i in range(0, len(images), MAP_CHUNK)]
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts])
                for key in parts[0]}
    return np.concatenate([np.asarray(part) for part in parts])


def _localize(piece, arm, model, images, boxes):
    """`{map name: per-image scores}` and `{map name: first maps}`."""
    from benchmarks import _localization as loc

    size = images.shape[1:3]
    scores, panels = {}, {}

    def add(name, maps, **extra):
        maps = np.asarray(maps, "float64")
        scores[name] = {
            "pointing_game": float(np.mean(loc.pointing_game(
                maps, boxes, image_size=size))),
            "energy_in_box": float(np.mean(loc.energy_in_box(
                maps, boxes, image_size=size))),
            **extra,
        }
        panels[f"{arm}: {name}"] = maps[:PICTURE_IMAGES]

    if piece.build == "ram":
        if arm == "attention":
            locations = model.glimpse_trace(images)
            hits = loc.glimpse_hits(locations, boxes, size)
            scores["glimpses"] = {"glimpse_hits": float(np.mean(hits))}
        return scores, panels
    theta = None
    if arm == "attention" and piece.build == "stn":
        from keras_attn.models import attention_model

        maps_model = attention_model(model)
        theta = _in_chunks(lambda x: np.asarray(
            maps_model(x)["spatial_transformer"]), images)
        read = loc.stn_box(theta, size)
        scores["stn_box"] = {
            "iou": float(np.mean(loc.box_iou(read, boxes))),
            "theta_std": float(theta.reshape(len(theta), -1).std(0).mean()),
        }
    elif arm == "attention":
        from keras_attn.viz.attention_maps import spatial_attention_maps

        maps = _in_chunks(lambda x: spatial_attention_maps(model, x)[0],
                          images)
        for name, value in maps.items():
            add(name, value)
    layer = _last_feature_layer(model)
    if layer is not None:
        from keras_attn.viz import grad_cam

        cam = _in_chunks(lambda x: grad_cam(model, x, layer), images)
        if theta is not None:
            # The CNN behind a transformer sees the warped image: bring its
            # map back to the input's frame before comparing with the box.
            cam = to_input_frame(cam, theta)
        add(f"grad_cam({layer})", cam)
    return scores, panels


def to_input_frame(maps, theta):
    """Maps `(N, h, w)` over a spatial transformer's output, resampled onto
    its input's pixels: input point `p` shows the output point that reads
    `p`, `theta^-1 p` (zero where no output point does)."""
    from keras import ops

    from keras_attn.ops import affine_grid
    from keras_attn.ops import bilinear_sample

    theta = np.asarray(theta, "float64")
    linear = np.linalg.inv(theta[:, :, :2])
    inverse = np.concatenate(
        [linear, -linear @ theta[:, :, 2:]], axis=-1).astype("float32")
    height, width = maps.shape[1:3]
    grid = affine_grid(ops.convert_to_tensor(inverse), height, width)
    out = bilinear_sample(
        ops.convert_to_tensor(np.asarray(maps, "float32")[..., None]), grid)
    return np.asarray(ops.convert_to_numpy(out))[..., 0]


def run_arm(piece_name, arm, seed, profile):
    """Train and evaluate one arm for one seed; returns a dict of results."""
    import keras

    piece = PIECES[piece_name]
    budget = piece.budget(profile)
    ram = piece.build == "ram" and arm == "attention"
    keras.utils.set_random_seed(seed)
    train_x, train_y = _source("train", budget.train_images)
    test_src, test_y = _source("test", budget.test_images)
    test_x, boxes = _canvases(piece.task, test_src, TEST_SEED, 0)
    num_classes = 10
    builder = _BUILDERS[piece.build]
    input_shape = test_x.shape[1:]
    if piece.build == "ram":
        model = builder(arm, input_shape, num_classes, seed=seed)
    else:
        model = builder(arm, input_shape, num_classes)
    if piece.init == "zero_last_bn":
        zero_last_batch_norm(model)
    steps = budget.train_images // budget.batch_size
    if budget.steps_per_epoch:
        steps = min(steps, budget.steps_per_epoch)
    # XLA compile time would dominate a smoke run of a few steps.
    jit = piece.jit and profile != "smoke"
    _compile(model, budget, steps, piece.lr, jit, ram,
             warmup=warmup_steps(piece, steps * budget.epochs))

    order = np.random.default_rng(seed)
    losses, val = [], []
    val_x, val_y = test_x[:1000], test_y[:1000]
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        canvases, _ = _canvases(piece.task, train_x, seed, epoch)
        take = order.permutation(len(canvases))[:steps * budget.batch_size]
        history = model.fit(canvases[take], train_y[take],
                            batch_size=budget.batch_size, epochs=1,
                            shuffle=False, verbose=0)
        losses.append(float(history.history["loss"][-1]))
        logs = model.evaluate(val_x, val_y, verbose=0, return_dict=True,
                              batch_size=budget.eval_batch_size)
        val.append(float(logs["accuracy"]))
        print(f"[{piece_name} {arm} seed {seed}] epoch {epoch + 1}/"
              f"{budget.epochs} loss {losses[-1]:.4f} val {val[-1]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - start
    logs = model.evaluate(test_x, test_y, verbose=0, return_dict=True,
                          batch_size=budget.eval_batch_size)
    moving = float(logs["accuracy"])
    if precise_batch_norm(model, canvases[take], budget.batch_size):
        logs = model.evaluate(test_x, test_y, verbose=0, return_dict=True,
                              batch_size=budget.eval_batch_size)
    result = {"test_accuracy": float(logs["accuracy"]),
              "test_accuracy_moving_bn": moving, "loss": losses,
              "val_accuracy": val, "train_seconds": train_seconds,
              "params": int(model.count_params()),
              "jit": bool(getattr(model, "jit_compile", False))}
    if boxes is not None:
        count = min(LOCALIZATION_IMAGES, len(test_x))
        result["localization"], panels = _localize(
            piece, arm, model, test_x[:count], boxes[:count])
        if seed == 0 or profile == "smoke":
            result["panels"] = {k: v.tolist() for k, v in panels.items()}
    result["seconds"] = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------
# The JSON: merged under a lock, one piece's rows replaced at a time


@contextlib.contextmanager
def _locked(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _machine():
    import keras

    return {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "keras": keras.__version__,
            "backend": keras.backend.backend()}


def _rows(piece_name, profile, seeds, results):
    """JSON rows and localisation entries of the finished `seeds`."""
    piece = PIECES[piece_name]
    budget = piece.budget(profile)
    rows, localization = [], []
    arms = ("attention", *piece.baselines)
    for baseline in piece.baselines:
        label = piece.model
        if len(piece.baselines) > 1:
            label = f"{piece.model} vs {baseline}"
        wall = sum(results[(arm, s)]["seconds"] for s in seeds
                   for arm in ("attention", baseline))
        rows.append({
            "mechanism": piece.mechanism, "task": piece.task, "model": label,
            "piece": piece_name, "profile": profile, "baseline_arm": baseline,
            "metric": "test_accuracy", "seeds": list(seeds),
            "attention": [results[("attention", s)]["test_accuracy"]
                          for s in seeds],
            "baseline": [results[(baseline, s)]["test_accuracy"]
                         for s in seeds],
            "moving_bn": {
                arm: [results[(arm, s)].get("test_accuracy_moving_bn")
                      for s in seeds] for arm in ("attention", baseline)},
            "bn": "moving statistics re-estimated over 20 training batches "
                  "after training (both arms)",
            "epochs": budget.epochs,
            "train_images": budget.train_images,
            "test_images": budget.test_images,
            "batch_size": budget.batch_size,
            "steps_per_epoch": min(
                budget.train_images // budget.batch_size,
                budget.steps_per_epoch or 10**9),
            "learning_rate": piece.lr, "schedule": schedule_name(piece),
            "jit": results[("attention", seeds[0])]["jit"],
            "params": {arm: results[(arm, seeds[0])]["params"]
                       for arm in ("attention", baseline)},
            "wall_seconds": wall,
            "seed_seconds": [sum(results[(arm, s)]["seconds"]
                                 for arm in ("attention", baseline))
                             for s in seeds],
            "curves": {
                "attention": [results[("attention", s)]["loss"]
                              for s in seeds],
                "baseline": [results[(baseline, s)]["loss"] for s in seeds],
            },
            "val_curves": {
                "attention": [results[("attention", s)]["val_accuracy"]
                              for s in seeds],
                "baseline": [results[(baseline, s)]["val_accuracy"]
                             for s in seeds],
            },
            "notes": piece.notes,
            "variant": piece.variant,
        })
    for arm in arms:
        names = results[(arm, seeds[0])].get("localization", {})
        for name in names:
            entry = {"model": f"{piece_name}:{arm}", "mechanism":
                     piece.mechanism, "task": piece.task, "map": name,
                     "piece": piece_name, "profile": profile,
                     "seeds": list(seeds)}
            for key in names[name]:
                entry[key] = [results[(arm, s)]["localization"][name][key]
                              for s in seeds]
            localization.append(entry)
    return rows, localization


def _floors(piece_name, profile):
    """Centre-prior and uniform maps: what a map that looks nowhere in
    particular scores (seed-independent)."""
    from benchmarks import _localization as loc

    piece = PIECES[piece_name]
    budget = piece.budget(profile)
    if piece.task == "fashion_mnist":
        return []
    images, _ = _source("test", budget.test_images)
    canvases, boxes = _canvases(piece.task, images, TEST_SEED, 0)
    count = min(LOCALIZATION_IMAGES, len(canvases))
    size = canvases.shape[1:3]
    entries = []
    for name, maps in (("centre_prior", loc.centre_prior(count, size)),
                       ("uniform", loc.uniform_map(count, size))):
        entries.append({
            "model": f"{piece_name}:floor", "mechanism": piece.mechanism,
            "task": piece.task, "map": name, "piece": piece_name,
            "profile": profile, "seeds": [],
            "pointing_game": [float(np.mean(loc.pointing_game(
                maps, boxes[:count], image_size=size)))],
            "energy_in_box": [float(np.mean(loc.energy_in_box(
                maps, boxes[:count], image_size=size)))],
        })
    return entries


def _picture(piece_name, profile, results, img_dir):
    """One PNG per piece: the first test canvases, every map kind of every
    arm (seed 0), the object's box drawn."""
    from benchmarks import _localization as loc

    panels = {}
    for (_arm, seed), result in sorted(results.items()):
        if seed == min(s for _, s in results):
            panels.update({k: np.asarray(v)
                           for k, v in result.get("panels", {}).items()})
    if not panels:
        return None
    piece = PIECES[piece_name]
    budget = piece.budget(profile)
    images, _ = _source("test", min(PICTURE_IMAGES, budget.test_images))
    canvases, boxes = _canvases(piece.task, images, TEST_SEED, 0)
    os.makedirs(img_dir, exist_ok=True)
    suffix = "" if profile == "full" else f"_{profile}"
    path = os.path.join(img_dir, f"maps_{piece_name}{suffix}.png")
    loc.draw_maps_with_boxes(canvases, panels, boxes, path)
    return path


# What must agree for seeds of two runs of a piece to be pooled in one row.
_SAME_SETTING = ("task", "model", "map", "epochs", "train_images",
                 "test_images", "batch_size", "learning_rate", "baseline_arm")


def _merge_seeds(old, new):
    """`new` with `old`'s other seeds added, when both ran the same setting.

    Every list aligned with `seeds` (at the top level or one dict down,
    e.g. `curves["attention"]`) is merged seed by seed; `new` wins for a
    seed in both. Entries without seeds (the floors) are replaced.
    """
    if (old is None or not new.get("seeds") or not old.get("seeds")
            or any(old.get(k) != new.get(k) for k in _SAME_SETTING)):
        return new
    seeds = sorted(set(old["seeds"]) | set(new["seeds"]))

    def merged(a, b):  # a: old value, b: new value
        if isinstance(b, dict) and isinstance(a, dict):
            return {k: merged(a.get(k), v) for k, v in b.items()}
        if (isinstance(b, list) and isinstance(a, list)
                and len(b) == len(new["seeds"])
                and len(a) == len(old["seeds"])):
            return [b[new["seeds"].index(s)] if s in new["seeds"]
                    else a[old["seeds"].index(s)] for s in seeds]
        return b

    result = {k: merged(old.get(k), v) for k, v in new.items() if k != "seeds"}
    result["seeds"] = seeds
    if len(result.get("seed_seconds", [])) == len(seeds):
        result["wall_seconds"] = float(sum(result["seed_seconds"]))
    elif "wall_seconds" in new:  # an older file without per-seed times
        result["wall_seconds"] = float(old.get("wall_seconds", 0.0)
                                       + new["wall_seconds"])
    return result


def _entry_key(entry):
    return (entry.get("piece"), entry.get("profile"), entry.get("model"),
            entry.get("map"), entry.get("baseline_arm"))


def finished_seeds(path, piece_name, profile):
    """Seeds of `piece_name` already in `path` at the piece's current
    setting (what `--resume` skips)."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        rows = json.load(f).get("rows", [])
    piece = PIECES[piece_name]
    budget = piece.budget(profile)
    seeds = None
    for row in rows:
        if (row.get("piece"), row.get("profile")) != (piece_name, profile):
            continue
        if (row.get("epochs"), row.get("train_images"),
                row.get("learning_rate")) != (budget.epochs,
                                              budget.train_images, piece.lr):
            continue
        found = set(row.get("seeds", []))
        seeds = found if seeds is None else seeds & found
    return seeds or set()


def write_results(path, piece_name, profile, rows, localization,
                  picture=None):
    """Merge one piece's rows into `path`: its entries of the same profile
    are replaced, except that seeds an earlier run of the same setting
    finished and this one did not run are kept (`_merge_seeds`)."""
    with _locked(path):
        data = {"rows": [], "localization": [], "pictures": {}}
        if os.path.exists(path):
            with open(path) as f:
                data.update(json.load(f))

        def mine(entry):
            return (entry.get("piece"), entry.get("profile")) == (
                piece_name, profile)

        for key, new in (("rows", rows), ("localization", localization)):
            old = {_entry_key(e): e for e in data[key] if mine(e)}
            data[key] = [e for e in data[key] if not mine(e)] + [
                _merge_seeds(old.get(_entry_key(e)), e) for e in new]
        if picture:
            data["pictures"][piece_name] = os.path.relpath(
                picture, os.path.dirname(os.path.dirname(RESULTS)))
        data["machine"] = _machine()
        data["command"] = "python -m benchmarks.fidelity " + " ".join(
            sys.argv[1:])
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Driver


def _worker_init(threads):
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def run_piece(piece_name, profile, seeds, jobs, path, img_dir):
    piece = PIECES[piece_name]
    arms = ("attention", *piece.baselines)
    tasks = [(arm, seed) for seed in seeds for arm in arms]
    results, done = {}, []
    floors = _floors(piece_name, profile)

    def finished(arm, seed, result):
        results[(arm, seed)] = result
        for s in seeds:
            if s not in done and all((a, s) in results for a in arms):
                done.append(s)
                picture = None
                if s == 0 or profile == "smoke":  # run_arm keeps its maps
                    picture = _picture(piece_name, profile, results, img_dir)
                rows, localization = _rows(piece_name, profile, sorted(done),
                                           results)
                write_results(path, piece_name, profile, rows,
                              localization + floors, picture)
                print(f"[{piece_name}] seeds {sorted(done)} written to "
                      f"{path}", flush=True)

    if piece.max_jobs is not None and jobs > piece.max_jobs:
        print(f"[{piece_name}] --jobs {jobs} lowered to {piece.max_jobs}: "
              "its arms do not fit in memory together", flush=True)
        jobs = piece.max_jobs
    if jobs <= 1:
        for arm, seed in tasks:
            finished(arm, seed, run_arm(piece_name, arm, seed, profile))
        return results
    import concurrent.futures
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(threads,),
    ) as pool:
        futures = {pool.submit(run_arm, piece_name, arm, seed, profile):
                   (arm, seed) for arm, seed in tasks}
        for future in concurrent.futures.as_completed(futures):
            arm, seed = futures[future]
            finished(arm, seed, future.result())
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(PIECES),
                   help="pieces to run (default: all)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds 0..N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--profile", choices=PROFILES, default="full")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run in parallel processes (each gets "
                        "cpus / jobs threads)")
    p.add_argument("--results", default=None,
                   help="JSON to merge into (default benchmarks/results/"
                        "fidelity.json, fidelity_smoke.json for smoke)")
    p.add_argument("--img-dir", default=None,
                   help="where map pictures go (default docs/img)")
    p.add_argument("--resume", action="store_true",
                   help="skip seeds the results file already has for the "
                        "piece at its current budget")
    p.add_argument("--list", action="store_true",
                   help="print the pieces and their budgets, run nothing")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    pieces = args.only or list(PIECES)
    if args.list:
        for name in pieces:
            piece = PIECES[name]
            print(f"{name:30s} {piece.mechanism:20s} {piece.task:14s} "
                  f"{piece.model} | {piece.full}")
        return None
    suffix = "" if args.profile == "full" else f"_{args.profile}"
    path = args.results or os.path.join(RESULTS, f"fidelity{suffix}.json")
    img_dir = args.img_dir or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
        "img")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for name in pieces:
        start = time.perf_counter()
        todo = seeds
        if args.resume:
            done = finished_seeds(path, name, args.profile)
            todo = [s for s in seeds if s not in done]
            print(f"[{name}] already finished: seeds {sorted(done)}")
        if todo:
            run_piece(name, args.profile, todo, args.jobs, path, img_dir)
        print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    return path


if __name__ == "__main__":
    main()
