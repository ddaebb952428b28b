"""Recurrent Attention Model (RAM) trained with REINFORCE.

Paper: Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247

The agent looks at an image through `num_glimpses` glimpses. At step
`t = 1..T`, with hidden state `h_{t-1}` (`h_0 = 0`):

    mu_t   = f_l(h_{t-1})             location policy mean, in [-1, 1]^2
    l_t    ~ N(mu_t, sigma^2 I)       sampled location (training)
    g_t    = f_g(rho(x, clip(l_t)), clip(l_t))   glimpse feature
    h_t    = f_h(h_{t-1}, g_t)        recurrent core (rnn or lstm)
    b_t    = f_b(h_{t-1})             baseline for step t
    p(y|x) = softmax(f_a(h_T))        classifier on the final state

Hybrid loss of one trajectory (paper Sec. 4 "Training", Eq. 2 with the
baseline of Sec. 4):

    L = -log p(y* | x)                                   classification
        - lambda sum_t log pi(l_t | h_{t-1}) sg(R - b_t)  REINFORCE
        + mean_t (R - b_t)^2                               baseline

with reward `R = 1` if `argmax p(y|x) = y*` else `0`, `sg` = stop-gradient
and `lambda = reinforce_weight`; averaged over the batch. Gradient paths:
the classifier, core and glimpse network learn from the classification
loss only; the location network from REINFORCE only (the sampled `l_t` is
stop-gradiented and `f_l` reads `sg(h)`); the baseline from its squared
error only (`f_b` reads `sg(h)`, and `R - b_t` is stop-gradiented in the
REINFORCE term). `log pi` is the log-density of the location actually drawn,
before clipping to `[-1, 1]` (the clipped location is what the sensor sees).

Shapes: images `(batch, H, W, C)`, labels `(batch,)` integer classes;
`model(images)` -> class probabilities `(batch, num_classes)`;
`glimpse_trace(images)` -> `(batch, num_glimpses, 2)` locations `(x, y)`.

Usage:
>>> import keras
>>> import numpy as np
>>> from keras_attn.ram import RecurrentAttentionModel
>>> images, labels = np.ones((4, 28, 28, 1)), np.arange(4)
>>> model = RecurrentAttentionModel(num_classes=10, num_glimpses=2,
...                                 num_scales=1)
>>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> history = model.fit(images, labels, epochs=1, verbose=0)
>>> sorted(history.history)
['accuracy', 'baseline_loss', 'classification_loss', 'loss',
 'reinforce_loss', 'reward']

Evaluation policies (`eval_policy`, settable; `evaluate_policies` runs all
three): `"mean"` uses the policy mean (deterministic, what
`inference_model()` exports); `"sample"` averages the class probabilities
of `eval_samples` sampled trajectories (the paper's Monte-Carlo test;
averaging can hide a poor policy, so compare with `"mean"`); `"random"`
draws every location uniformly in `[-1, 1]^2` (the paper's "random
glimpses" control).

Needs the TensorFlow backend for training (`train_step` uses
`tf.GradientTape`, the policy is a `tfp.distributions.Normal`); TensorFlow
Probability is imported on first use. The mean-policy forward pass is plain
`keras.ops`.

Deviations, stated plainly:

- The first location `l_1` comes from the location network applied to
  `h_0 = 0`, i.e. it is a learned start `tanh(bias)` (the image centre at
  initialisation), sampled like every other location during training and
  deterministic under the mean policy. The paper draws `l_0` at random.
- The baseline `b_t` is read from the state `h_{t-1}` from which `l_t` is
  chosen (one baseline per decision); the paper only says the baseline
  depends on the state.
- The baseline loss is the squared error averaged over steps and batch;
  the REINFORCE term is summed over steps and averaged over the batch, and
  scaled by `reinforce_weight` (paper: 1; the popular PyTorch port: 0.01).
  Logged `reinforce_loss` is that scaled term as it enters the total loss.
- Under `eval_policy="sample"`, the logged `accuracy` is that of the
  averaged probabilities while `reward` averages the single trajectories.
- `fit` / `evaluate` ignore sample weights; labels are integer classes.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_attn.ram.glimpse_sensor import GlimpseSensor
from keras_attn.ram.networks import CORES
from keras_attn.ram.networks import BaselineNetwork
from keras_attn.ram.networks import CoreNetwork
from keras_attn.ram.networks import GlimpseNetwork
from keras_attn.ram.networks import LocationNetwork
from keras_attn.utils import validation

POLICIES = ("mean", "sample", "random")
METRICS = (
    "loss",
    "accuracy",
    "reward",
    "classification_loss",
    "reinforce_loss",
    "baseline_loss",
)


def _distributions():
    # Imported on first use: TFP is heavy and TensorFlow-only, and the
    # layers of this package must import on every backend.
    import tensorflow_probability as tfp

    return tfp.distributions


@keras.saving.register_keras_serializable(package="keras_attn")
class RecurrentAttentionModel(keras.Model):
    """Recurrent Attention Model (RAM) of Mnih et al., 2014.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247): a recurrent agent
    that classifies an image from a few multi-resolution glimpses whose
    locations it chooses with a Gaussian policy trained by REINFORCE. See
    the module docstring for the equations, gradient paths and deviations.

    Args:
        num_classes: number of classes.
        num_glimpses: glimpses per image `T` (paper: 6 on MNIST).
        glimpse_size: patch side `g` in pixels (paper: 8 or 12).
        num_scales: patches per glimpse `k` (paper: 1 or 3).
        scale_factor: integer ratio of consecutive patch sides (paper: 2).
        what_units: units of `h_g` (paper: 128).
        where_units: units of `h_l` (paper: 128).
        glimpse_units: units of the glimpse feature `g_t` (paper: 256).
        core_units: units of the core state `h_t` (paper: 256).
        core: `"rnn"` (paper: rectifier RNN) or `"lstm"`.
        location_hidden_units: `0` (linear location head, paper) or the
            width of an extra ReLU layer in the location network.
        location_std: fixed standard deviation `sigma` of the location
            policy, in normalised units (1 = half the image).
        reinforce_weight: `lambda`, scale of the REINFORCE term.
        eval_policy: `"mean"`, `"sample"` or `"random"` (see module
            docstring); used by `evaluate`, `predict` and `__call__`.
        eval_samples: trajectories averaged under `eval_policy="sample"`.
        seed: optional integer seed of the location sampler.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import RecurrentAttentionModel
    >>> images = np.ones((2, 28, 28, 1))
    >>> model = RecurrentAttentionModel(num_classes=10, num_glimpses=4,
    ...                                 glimpse_size=8, num_scales=1)
    >>> tuple(model(images).shape)  # class probabilities, mean policy
    (2, 10)
    >>> model.glimpse_trace(images).shape  # (x, y) of each glimpse
    (2, 4, 2)
    """

    def __init__(
        self,
        num_classes,
        num_glimpses=6,
        glimpse_size=8,
        num_scales=3,
        scale_factor=2,
        what_units=128,
        where_units=128,
        glimpse_units=256,
        core_units=256,
        core="rnn",
        location_hidden_units=0,
        location_std=0.1,
        reinforce_weight=1.0,
        eval_policy="mean",
        eval_samples=1,
        seed=None,
        **kwargs,
    ):
        validation.check_positive_int(self, "num_classes", num_classes, 2)
        validation.check_positive_int(self, "num_glimpses", num_glimpses)
        validation.check_choice(self, "core", core, CORES)
        validation.check_positive_float(self, "location_std", location_std)
        validation.check_positive_float(
            self, "reinforce_weight", reinforce_weight
        )
        validation.check_choice(self, "eval_policy", eval_policy, POLICIES)
        validation.check_positive_int(self, "eval_samples", eval_samples)
        if seed is not None:
            validation.check_positive_int(self, "seed", seed, minimum=0)
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.num_glimpses = num_glimpses
        self.glimpse_size = glimpse_size
        self.num_scales = num_scales
        self.scale_factor = scale_factor
        self.what_units = what_units
        self.where_units = where_units
        self.glimpse_units = glimpse_units
        self.core_units = core_units
        self.core = core
        self.location_hidden_units = location_hidden_units
        self.location_std = float(location_std)
        self.reinforce_weight = float(reinforce_weight)
        self._eval_policy = eval_policy
        self._eval_samples = eval_samples
        self.seed = seed
        self.sensor = GlimpseSensor(
            glimpse_size, num_scales, scale_factor, name="sensor"
        )
        self.glimpse_network = GlimpseNetwork(
            what_units, where_units, glimpse_units, name="glimpse_network"
        )
        self.core_network = CoreNetwork(core_units, core, name="core_network")
        self.location_network = LocationNetwork(
            location_hidden_units, name="location_network"
        )
        self.baseline_network = BaselineNetwork(name="baseline_network")
        self.classifier = keras.layers.Dense(
            num_classes, name="classifier", dtype="float32"
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = [keras.metrics.Mean(name=m) for m in METRICS]
        self._image_shape = None

    # ------------------------------------------------------------------
    # Evaluation policy (settable; changing it retraces evaluate/predict)

    @property
    def eval_policy(self):
        return self._eval_policy

    @eval_policy.setter
    def eval_policy(self, value):
        validation.check_choice(
            self, "eval_policy", value, POLICIES
        )
        self._eval_policy = value
        self._forget_compiled_functions()

    @property
    def eval_samples(self):
        return self._eval_samples

    @eval_samples.setter
    def eval_samples(self, value):
        validation.check_positive_int(
            self, "eval_samples", value
        )
        self._eval_samples = value
        self._forget_compiled_functions()

    def _forget_compiled_functions(self):
        # evaluate / predict trace the policy into a graph once; dropping
        # the cached functions makes the next call trace the new policy.
        self.test_function = None
        self.predict_function = None

    # ------------------------------------------------------------------
    # Building

    def build(self, input_shape):
        shape = tuple(input_shape)
        validation.check_image_shape(self, shape, "images")
        self._image_shape = shape[1:]
        g = self.glimpse_size
        core = (None, self.core_units)
        # Sublayers may already be built: fit/evaluate on TensorFlow trace
        # train_step without calling the model first.
        for layer, args in (
            (self.sensor, (shape, (None, 2))),
            (self.glimpse_network,
             ([(None, self.num_scales, g, g, shape[-1]), (None, 2)],)),
            (self.core_network, ((None, self.glimpse_units),)),
            (self.location_network, (core,)),
            (self.baseline_network, (core,)),
            (self.classifier, (core,)),
        ):
            if not layer.built:
                layer.build(*args)
        self.built = True

    # ------------------------------------------------------------------
    # The unrolled agent

    def unroll(self, images, policy="mean", noise=None, baselines=True):
        """Run the agent for `num_glimpses` steps.

        Args:
            images: `(batch, H, W, C)`.
            policy: `"mean"`, `"sample"` or `"random"`.
            noise: optional `(batch, num_glimpses, 2)` standard-normal draws
                used by `"sample"` instead of the model's own sampler (so
                tests can fix the trajectory).
            baselines: also compute the baselines `b_t`.

        Returns:
            A dict of tensors: `logits (B, K)`, `means (B, T, 2)` (policy
            means), `raw_locations (B, T, 2)` (the drawn locations, before
            clipping: these get the log-density), `locations (B, T, 2)`
            (clipped, seen by the sensor), `hidden (B, T, U)` (the state
            each location was chosen from) and, with `baselines=True`,
            `baselines (B, T)`.
        """
        validation.check_choice(
            self, "policy", policy, POLICIES
        )
        if not self.built:
            self.build(tuple(images.shape))
        states = self.core_network.initial_states(images)
        steps = {k: [] for k in ("means", "raw", "locations", "hidden",
                                 "baselines")}
        for t in range(self.num_glimpses):
            h = states[0]
            mean = self.location_network(h)
            if policy == "mean":
                raw = ops.stop_gradient(mean)
            elif policy == "sample":
                if noise is None:
                    eps = keras.random.normal(
                        ops.shape(mean), seed=self.seed_generator
                    )
                else:
                    eps = ops.cast(noise[:, t], "float32")
                # The action is a constant for backprop: the location
                # network learns from log pi(l_t) only (REINFORCE).
                raw = ops.stop_gradient(mean + self.location_std * eps)
            else:
                raw = keras.random.uniform(
                    ops.shape(mean), -1.0, 1.0, seed=self.seed_generator
                )
            location = ops.clip(raw, -1.0, 1.0)
            if baselines:
                steps["baselines"].append(self.baseline_network(h)[:, 0])
            glimpse = self.sensor(images, location)
            feature = self.glimpse_network([glimpse, location])
            _, states = self.core_network(feature, states)
            steps["means"].append(mean)
            steps["raw"].append(raw)
            steps["locations"].append(location)
            steps["hidden"].append(h)
        out = {
            "logits": self.classifier(states[0]),
            "means": ops.stack(steps["means"], axis=1),
            "raw_locations": ops.stack(steps["raw"], axis=1),
            "locations": ops.stack(steps["locations"], axis=1),
            "hidden": ops.stack(steps["hidden"], axis=1),
        }
        if baselines:
            out["baselines"] = ops.stack(steps["baselines"], axis=1)
        return out

    def log_prob(self, means, raw_locations):
        """`log pi(l | mu) = sum_xy log N(l; mu, sigma^2)`, `(B, T)`, from
        `tfp.distributions`, of the unclipped locations."""
        tfd = _distributions()
        policy = tfd.Independent(
            tfd.Normal(loc=means, scale=self.location_std),
            reinterpreted_batch_ndims=1,
        )
        return policy.log_prob(raw_locations)

    def compute_ram_losses(self, images, labels, policy="sample", samples=1,
                           noise=None):
        """The hybrid loss and its terms for one batch.

        Args:
            images: `(batch, H, W, C)`.
            labels: `(batch,)` integer classes.
            policy: location policy (`"sample"` for training).
            samples: trajectories per image; their class probabilities are
                averaged for `accuracy`.
            noise: optional `(samples * batch, T, 2)` standard-normal draws
                (see `unroll`); trajectory `m` of image `b` is row
                `m * batch + b`.

        Returns:
            A dict with the scalar `loss`, `classification_loss`,
            `reinforce_loss`, `baseline_loss`, `reward` (mean) and
            `accuracy`, and the per-trajectory tensors `rewards (S B,)`,
            `log_pi (S B, T)`, `advantages (S B, T)` and those of `unroll`.
        """
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        if samples > 1:
            images = ops.tile(images, (samples, 1, 1, 1))
            all_labels = ops.tile(labels, (samples,))
        else:
            all_labels = labels
        out = self.unroll(images, policy, noise=noise)
        logits = out["logits"]
        nll = ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                all_labels, logits, from_logits=True
            )
        )
        prediction = ops.cast(ops.argmax(logits, axis=-1), "int32")
        rewards = ops.cast(ops.equal(prediction, all_labels), "float32")
        log_pi = self.log_prob(out["means"], out["raw_locations"])
        baselines = out["baselines"]
        advantages = ops.stop_gradient(rewards[:, None] - baselines)
        reinforce = -self.reinforce_weight * ops.mean(
            ops.sum(log_pi * advantages, axis=1)
        )
        baseline_loss = ops.mean(
            ops.square(baselines - ops.stop_gradient(rewards)[:, None])
        )
        if samples > 1:
            probs = ops.softmax(logits, axis=-1)
            probs = ops.mean(
                ops.reshape(probs, (samples, -1, self.num_classes)), axis=0
            )
            final = ops.cast(ops.argmax(probs, axis=-1), "int32")
            accuracy = ops.mean(ops.cast(ops.equal(final, labels), "float32"))
        else:
            accuracy = ops.mean(rewards)
        out.update(
            loss=nll + reinforce + baseline_loss,
            classification_loss=nll,
            reinforce_loss=reinforce,
            baseline_loss=baseline_loss,
            reward=ops.mean(rewards),
            accuracy=accuracy,
            rewards=rewards,
            log_pi=log_pi,
            advantages=advantages,
        )
        return out

    # ------------------------------------------------------------------
    # Keras hooks

    def call(self, inputs, training=False):
        """Class probabilities `(batch, num_classes)` under `eval_policy`
        (`eval_samples` trajectories averaged for `"sample"`)."""
        samples = self.eval_samples if self.eval_policy == "sample" else 1
        images = inputs
        if samples > 1:
            images = ops.tile(images, (samples, 1, 1, 1))
        out = self.unroll(images, self.eval_policy, baselines=False)
        probs = ops.softmax(out["logits"], axis=-1)
        if samples > 1:
            probs = ops.mean(
                ops.reshape(probs, (samples, -1, self.num_classes)), axis=0
            )
        return probs

    @property
    def metrics(self):
        # Only these trackers: Keras resets them every epoch and reports
        # them from fit and evaluate.
        return list(self._trackers)

    def _record(self, terms):
        for tracker in self._trackers:
            tracker.update_state(terms[tracker.name])
        return {m.name: m.result() for m in self._trackers}

    def train_step(self, data):
        import tensorflow as tf

        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.compute_ram_losses(images, labels, policy="sample")
        variables = self.trainable_variables
        grads = tape.gradient(terms["loss"], variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables, strict=True)
             if g is not None]
        )
        return self._record(terms)

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        samples = self.eval_samples if self.eval_policy == "sample" else 1
        terms = self.compute_ram_losses(
            images, labels, policy=self.eval_policy, samples=samples
        )
        return self._record(terms)

    # ------------------------------------------------------------------
    # Analysis and export

    def evaluate_policies(self, x, y=None, batch_size=None,
                          policies=POLICIES, **kwargs):
        """Accuracy of each evaluation policy, `{policy: accuracy}`.

        Runs `evaluate` once per policy (`"sample"` averages
        `eval_samples` trajectories) and restores `eval_policy`.
        """
        saved = self.eval_policy
        result = {}
        try:
            for policy in policies:
                self.eval_policy = policy
                logs = self.evaluate(
                    x, y, batch_size=batch_size, verbose=0,
                    return_dict=True, **kwargs
                )
                result[policy] = float(logs["accuracy"])
        finally:
            self.eval_policy = saved
        return result

    def glimpse_trace(self, images, policy="mean"):
        """Locations seen by the sensor, `(batch, num_glimpses, 2)` NumPy
        array of `(x, y)` in `[-1, 1]` (x horizontal, y vertical, corners
        convention of `GlimpseSensor`)."""
        images = ops.convert_to_tensor(np.asarray(images, "float32"))
        out = self.unroll(images, policy, baselines=False)
        return np.asarray(ops.convert_to_numpy(out["locations"]))

    def inference_model(self, input_shape=None):
        """A functional `keras.Model` images -> class probabilities on the
        mean policy (no randomness), sharing this model's weights; for
        export (SavedModel, TFLite builtins only).

        The first location is the learned start `tanh(bias)` of the
        location network (its output at `h_0 = 0`), the same for every
        image, as in `eval_policy="mean"`.

        Args:
            input_shape: `(H, W, C)`; defaults to the shape the model was
                built with.
        """
        shape = tuple(input_shape) if input_shape else self._image_shape
        if shape is None:
            raise ValueError(
                "RecurrentAttentionModel.inference_model: the model is not "
                "built; call it on images or pass input_shape=(H, W, C)."
            )
        if not self.built:
            self.build((None, *shape))
        inputs = keras.Input(shape, name="images")
        out = self.unroll(inputs, "mean", baselines=False)
        probs = ops.softmax(out["logits"], axis=-1)
        return keras.Model(inputs, probs, name=f"{self.name}_inference")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_glimpses=self.num_glimpses,
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            what_units=self.what_units,
            where_units=self.where_units,
            glimpse_units=self.glimpse_units,
            core_units=self.core_units,
            core=self.core,
            location_hidden_units=self.location_hidden_units,
            location_std=self.location_std,
            reinforce_weight=self.reinforce_weight,
            eval_policy=self.eval_policy,
            eval_samples=self.eval_samples,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

