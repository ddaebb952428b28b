"""Make `model.fit` work under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's TensorFlow trainer (3.15) fails under a multi-worker strategy in
two places (keras-team/keras#20585, open): before the first step it reduces
the first distributed batch, an `(x, y)` tuple, with `strategy.reduce`,
which the collective strategy rejects ("Attempt to convert a value
(PerReplica...)"); and it averages every scalar log with
`strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar. The two
patches below change nothing else: the model is built from one local batch
(what the trainer does without a strategy) and scalar logs are averaged
with `axis=None`. They apply only when a multi-worker strategy is in use.
`tests/test_recipes_distributed.py` trains two workers on 127.0.0.1 and
checks that they finish with the same weights.
"""

from __future__ import annotations

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as _trainer

_original_reduce = _trainer.reduce_per_replica


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and (
        _trainer._collective_all_reduce_multi_worker(strategy)
    ):
        def mean(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", value, axis=None)
            return value

        return tf.nest.map_structure(mean, values)
    return _original_reduce(values, strategy, reduction)


def patch_fit(model, sample_batch):
    """Patch the trainer for multi-worker training; `sample_batch` is one
    local (not distributed) `(x, y)` batch used to build the model."""
    _trainer.reduce_per_replica = _reduce_per_replica
    build = model._maybe_symbolic_build

    def build_from_local_batch(iterator=None, data_batch=None):
        return build(data_batch=sample_batch if data_batch is None
                     else data_batch)

    model._maybe_symbolic_build = build_from_local_batch
