"""Stand-alone self-attention ResNet on Fashion-MNIST (Ramachandran et al.,
NeurIPS 2019).

SASA-ResNet-26: every 3x3 conv of the bottleneck blocks is k x k local
self-attention with relative embeddings; `--stem attention` also replaces
the stem (`--no-attention`: the conv ResNet-26). `--width` scales the
channel counts (the paper's network is `--width 1`).

    python -m recipes.sasa_resnet --kernel-size 7 --width 0.25
"""

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = True
JIT_NOTE = (
    "13.4 vs 12.7 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 3 --rounds 2, 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=26, choices=(26, 50))
    p.add_argument("--stem", default="conv", choices=("conv", "attention"))
    p.add_argument("--kernel-size", type=int, default=7)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--width", type=float, default=0.25)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import sasa_resnet

    def build(input_shape, num_classes):
        return sasa_resnet(
            input_shape, num_classes, depth=args.depth, stem=args.stem,
            attention=True if args.attention else None,
            kernel_size=args.kernel_size,
            num_heads=args.heads, width=args.width,
        )

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "sasa_resnet" if args.attention else "sasa_resnet_baseline"
    return common.train(builder(args), args, name)


if __name__ == "__main__":
    main()
