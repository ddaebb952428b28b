"""What the attention of the fidelity benchmark's models does at
initialisation.

    python -m benchmarks.gates_at_init   # writes results/gates_at_init.json

- SE and CBAM: builds the fidelity benchmark's ResNet-20 (28x28x1) with
  each, runs 16 random images through `keras_attn.models.attention_model`
  and reports, per map kind, the mean gate value and its range over
  blocks. A sigmoid gate near 0.5 halves its branch; CBAM multiplies two.
- SASA: the same for the benchmark's SASA-ResNet-26 at width 1/4, per
  attention layer: how peaked each query's softmax over its 7x7 window is
  (mean largest weight, and mean entropy against `ln(k*k)` for a uniform
  window). A near one-hot softmax at the start passes little gradient to
  the neighbours it ignores.
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


def local_attention_statistics(images, seed=0):
    """Per SASA layer of SASA-ResNet-26 (width 1/4): `max_weight` (mean
    over queries and heads of the largest weight) and `entropy` (mean, in
    nats), with `uniform_entropy = ln(k*k)`."""
    import keras

    from keras_attn import models
    from keras_attn.models.attention_maps import attention_map_layers

    keras.utils.set_random_seed(seed)
    model = models.sasa_resnet(images.shape[1:], 10, 26, attention=True,
                               width=0.25)
    maps = models.attention_model(model)(images)
    layers = {}
    for name, layer, _ in attention_map_layers(model):
        w = np.asarray(keras.ops.convert_to_numpy(maps[name]), "float64")
        entropy = -np.sum(np.where(w > 0, w * np.log(np.maximum(w, 1e-30)),
                                   0.0), axis=-1)
        layers[name] = {"max_weight": float(w.max(-1).mean()),
                        "entropy": float(entropy.mean()),
                        "uniform_entropy": float(np.log(w.shape[-1])),
                        "heads": int(w.shape[-2]),
                        "channels_per_head": int(layer.filters
                                                 // layer.num_heads)}
    return layers


def main():
    images = np.random.default_rng(0).random((16, 28, 28, 1), "float32")
    result = {a: gate_statistics(a, images) for a in ("se", "cbam")}
    sasa = local_attention_statistics(images)
    for name, s in sasa.items():
        print(f"sasa  {name:22s} max weight {s['max_weight']:.3f} entropy "
              f"{s['entropy']:.2f} (uniform {s['uniform_entropy']:.2f}; "
              f"{s['heads']} heads x {s['channels_per_head']} channels)")
    for attention, kinds in result.items():
        for kind, s in kinds.items():
            print(f"{attention:5s} {kind:8s} mean {s['mean']:.3f} "
                  f"(blocks {s['min']:.3f}-{s['max']:.3f}, n={s['blocks']})")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gates_at_init.json"), "w") as f:
        json.dump({"command": "python -m benchmarks.gates_at_init",
                   "model": "ResNet-20 28x28x1, 16 uniform random images",
                   "gates": result, "sasa_resnet26_w0.25": sasa}, f,
                  indent=1)


if __name__ == "__main__":
    main()
