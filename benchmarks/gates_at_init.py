"""How much SE and CBAM gates scale their residual branches at initialisation.

    python -m benchmarks.gates_at_init   # writes results/gates_at_init.json

Builds the fidelity benchmark's ResNet-20 (28x28x1) with SE and with CBAM,
runs 16 random images through `keras_attn.models.attention_model` and
reports, per map kind, the mean gate value and its range over blocks. A
sigmoid gate near 0.5 halves its branch; CBAM multiplies two of them.
"""

import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def gate_statistics(attention, images, seed=0):
    import keras

    from keras_attn import models

    keras.utils.set_random_seed(seed)
    model = models.resnet(images.shape[1:], 10, 20, attention=attention)
    from keras_attn.models.attention_maps import attention_map_layers

    maps = models.attention_model(model)(images)
    by_kind = {}
    for name, layer, index in attention_map_layers(model):
        by_kind.setdefault(layer.attention_kinds[index], []).append(
            float(np.mean(keras.ops.convert_to_numpy(maps[name]))))
    return {kind: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                   "max": float(np.max(v)), "blocks": len(v)}
            for kind, v in by_kind.items()}


def main():
    images = np.random.default_rng(0).random((16, 28, 28, 1), "float32")
    result = {a: gate_statistics(a, images) for a in ("se", "cbam")}
    for attention, kinds in result.items():
        for kind, s in kinds.items():
            print(f"{attention:5s} {kind:8s} mean {s['mean']:.3f} "
                  f"(blocks {s['min']:.3f}-{s['max']:.3f}, n={s['blocks']})")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gates_at_init.json"), "w") as f:
        json.dump({"command": "python -m benchmarks.gates_at_init",
                   "model": "ResNet-20 28x28x1, 16 uniform random images",
                   "gates": result}, f, indent=1)


if __name__ == "__main__":
    main()
