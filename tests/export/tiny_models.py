"""The tiny 28x28x1, 10-class models that the export tests and
`benchmarks/export.py` export: every builder of `keras_attn.models` (and
RAM), small enough to train and convert in seconds."""

import keras

from keras_attn import models

SHAPE = (28, 28, 1)
BUILDERS = {
    "se_resnet": lambda: models.resnet(SHAPE, 10, 20, attention="se"),
    "cbam_resnet": lambda: models.resnet(SHAPE, 10, 20, attention="cbam"),
    "ltpa_pc_concat": lambda: models.ltpa_vgg(SHAPE, 10, width=0.0625,
                                              global_dim=32),
    "ltpa_dp_indep": lambda: models.ltpa_vgg(
        SHAPE, 10, compatibility="dp", head="indep", width=0.0625,
        global_dim=32),
    "attention56": lambda: models.residual_attention_network(
        SHAPE, 10, width=0.0625),
    "stn": lambda: models.stn_classifier(SHAPE, 10),
    "aa_wrn": lambda: models.aa_wide_resnet(
        SHAPE, 10, depth=10, width=1, num_heads=2, min_key_dims_per_head=2),
    "aa_resnet": lambda: models.aa_resnet(
        SHAPE, 10, depth=18, augmented_stages=(3, 4), num_heads=2,
        min_key_dims_per_head=2),
    "sasa_resnet": lambda: models.sasa_resnet(
        SHAPE, 10, width=0.125, kernel_size=3, num_heads=2),
    "ram": None,  # built by `build`
}


def build(name):
    """The untrained model `name`, seeded (RAM built for 28x28x1)."""
    keras.utils.set_random_seed(0)
    if name != "ram":
        return BUILDERS[name]()
    from keras_attn.ram import RecurrentAttentionModel

    model = RecurrentAttentionModel(10, num_glimpses=2, glimpse_size=8,
                                    num_scales=2)
    model.build((None, *SHAPE))
    return model
