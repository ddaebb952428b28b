"""Residual Attention Network on Fashion-MNIST (Wang et al., CVPR 2017).

Attention-56 (or -92) with mixed, channel or spatial soft masks, on the
small-input stem (`--no-attention`: the same pre-activation trunk without
the mask branches). `--width` scales the channel counts (the paper's
network is `--width 1`).

    python -m recipes.residual_attention --mask mixed --width 0.25
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "433.1 vs 492.1 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=56, choices=(56, 92))
    p.add_argument("--mask", default="mixed",
                   choices=("mixed", "channel", "spatial"))
    p.add_argument("--width", type=float, default=0.125)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import residual_attention_network

    def build(input_shape, num_classes):
        return residual_attention_network(
            input_shape, num_classes, depth=args.depth,
            mask_activation=args.mask,
            attention=True if args.attention else None,
            width=args.width,
        )

    return build


def main(argv=None):
    args = parse_args(argv)
    name = (f"attention{args.depth}_{args.mask}" if args.attention
            else f"attention{args.depth}_baseline")
    # Seed, mixed precision, strategy, run folder, data (validation held
    # out of the training split) and callbacks.
    run = common.setup(args, name)

    with run.scope():
        model = builder(args)(run.input_shape, run.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=common.jit_compile(args),
        )
    common.prepare_fit(model, run)

    history = model.fit(
        run.train,
        validation_data=run.val,
        epochs=args.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=run.callbacks,
        shuffle=False,  # the data pipeline shuffles, every epoch anew
    )
    scores = model.evaluate(run.test, return_dict=True)
    return common.write_outputs(run, model, history, scores)


if __name__ == "__main__":
    main()
