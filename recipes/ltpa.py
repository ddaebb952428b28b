"""Learn to Pay Attention on Fashion-MNIST (Jetley et al., ICLR 2018).

VGG with attention estimators on conv layers 7, 10 and 13, `pc` or `dp`
compatibility and `concat` or `indep` heads (`--no-attention`: the same
VGG classifying the global feature alone). `--width` scales the VGG widths
(the paper's network is `--width 1`).

    python -m recipes.ltpa --compatibility pc --head concat
    python -m recipes.ltpa --compatibility dp --head indep --width 0.25
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "116.7 vs 148.2 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--compatibility", default="pc", choices=("pc", "dp"))
    p.add_argument("--head", default="concat", choices=("concat", "indep"))
    p.add_argument("--width", type=float, default=0.25)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import ltpa_vgg

    def build(input_shape, num_classes):
        return ltpa_vgg(input_shape, num_classes,
                        compatibility=args.compatibility, head=args.head,
                        attention=True if args.attention else None,
                        width=args.width,
                        global_dim=max(64, int(512 * args.width)))

    return build


def main(argv=None):
    args = parse_args(argv)
    name = (f"ltpa_{args.compatibility}_{args.head}" if args.attention
            else "ltpa_baseline")
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
