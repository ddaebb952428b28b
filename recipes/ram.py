"""Recurrent Attention Model on Fashion-MNIST tasks (Mnih et al., NIPS 2014).

A RAM agent (glimpse sensor, recurrent core, Gaussian location policy
trained with REINFORCE) on the paper's tasks built from Fashion-MNIST:
`centered28`, `translated60`, `cluttered60`, `cluttered100`. Reports the
test accuracy of each evaluation policy (the policy mean, `--mc-samples`
sampled trajectories averaged, and uniformly random locations) and draws
the glimpse paths over the fixed test images (`glimpses.png`).
`--no-attention` trains the paper's fully-connected baseline instead (two
ReLU layers of 256 units on the whole image).

    python -m recipes.ram --dataset centered28 --glimpses 6
    python -m recipes.ram --dataset translated60 --glimpses 6 --scales 3 \\
        --glimpse-size 12
"""

import os

import keras

from . import common

TASKS = ("centered28", "translated60", "cluttered60", "cluttered100")


def fc_baseline(input_shape, num_classes):
    """The paper's "FC, 2 layers (256 hiddens each)" baseline."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for i in (1, 2):
        x = keras.layers.Dense(256, activation="relu", name=f"fc{i}")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32",
                                      name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fc_baseline")


# Measured, not assumed: see benchmarks/results/models.json.
JIT = True
JIT_NOTE = (
    "8,019 vs 7,470 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], datasets=TASKS,
                      batch_size=64, epochs=2, jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--glimpses", type=int, default=6)
    p.add_argument("--glimpse-size", type=int, default=8)
    p.add_argument("--scales", type=int, default=1)
    p.add_argument("--core", default="rnn", choices=("rnn", "lstm"))
    p.add_argument("--location-std", type=float, default=0.1)
    p.add_argument("--mc-samples", type=int, default=10,
                   help="trajectories averaged by the sampled evaluation")
    args = p.parse_args(argv)
    if args.mixed_precision:
        p.error("the RAM recipe trains in float32")
    return args


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""

    def build(input_shape, num_classes):
        if not args.attention:
            return fc_baseline(input_shape, num_classes)
        from keras_attn.ram import RecurrentAttentionModel

        model = RecurrentAttentionModel(
            num_classes, num_glimpses=args.glimpses,
            glimpse_size=args.glimpse_size, num_scales=args.scales,
            core=args.core, location_std=args.location_std,
            eval_samples=args.mc_samples, seed=args.seed,
        )
        model.build((None, *input_shape))
        return model

    return build


def main(argv=None):
    args = parse_args(argv)
    name = (f"ram_{args.dataset}_{args.glimpses}g" if args.attention
            else f"ram_{args.dataset}_fc_baseline")
    # Seed, strategy, run folder, data (validation held out of the
    # training split) and callbacks.
    run = common.setup(args, name)

    with run.scope():
        model = builder(args)(run.input_shape, run.num_classes)
        if args.attention:
            # RAM carries its own hybrid loss (cross-entropy, REINFORCE,
            # baseline regression) and metrics in `train_step`.
            model.compile(optimizer=keras.optimizers.Adam(args.lr),
                          jit_compile=args.jit)
        else:  # the FC baseline is a plain classifier
            model.compile(
                optimizer=keras.optimizers.Adam(args.lr),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                jit_compile=common.jit_compile(args),
            )
    common.prepare_fit(model, run, build_state=not args.attention)

    history = model.fit(
        run.train,
        validation_data=run.val,
        epochs=args.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=run.callbacks,
        shuffle=False,  # the task pipeline shuffles, every epoch anew
    )
    scores = model.evaluate(run.test, return_dict=True)
    extra = {}
    if args.attention:
        # The test accuracy of each evaluation policy: the policy mean,
        # `--mc-samples` sampled trajectories, uniformly random locations.
        extra["test_accuracy_by_policy"] = model.evaluate_policies(run.test)

    def glimpses(model, images, labels, out):
        if not args.attention:
            return []
        from keras_attn.viz import draw_glimpses

        path = os.path.join(out, "glimpses.png")
        predictions = keras.ops.convert_to_numpy(model(images)).argmax(-1)
        draw_glimpses(images, model.glimpse_trace(images), path=path,
                      glimpse_size=args.glimpse_size,
                      num_scales=args.scales, labels=labels,
                      predictions=predictions)
        return [path]

    return common.write_outputs(run, model, history, scores,
                                pictures=glimpses, extra=extra)


if __name__ == "__main__":
    main()
