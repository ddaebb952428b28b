"""The trainable parts of the Recurrent Attention Model (RAM).

Paper: Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247 (Sec. 3.1 and 4).

- `GlimpseNetwork` f_g (the "what" and "where" pathways):
  `h_g = ReLU(Linear(rho(x, l)))`, `h_l = ReLU(Linear(l))`,
  `g = ReLU(Linear(h_g) + Linear(h_l))` (paper: 128, 128 and 256 units).
- `CoreNetwork` f_h: `h_t = ReLU(Linear(h_{t-1}) + Linear(g_t))` (the
  paper's rectifier RNN, `core="rnn"`, a `keras.layers.SimpleRNNCell`) or
  an LSTM (`core="lstm"`, `keras.layers.LSTMCell`, used by the paper for
  the dynamic environment).
- `LocationNetwork` f_l: the mean `mu_t = tanh(Linear(h_t))` of the
  Gaussian location policy `l_{t+1} ~ N(mu_t, sigma^2 I)` (fixed sigma).
- `BaselineNetwork` f_b: `b_t = Linear(h_t)`, the variance-reducing
  baseline of REINFORCE, trained by regression on the reward.

The location and baseline networks read `stop_gradient(h_t)`: the location
network learns only from REINFORCE and the baseline only from its squared
error, and neither sends gradients into the core (the core and the glimpse
network learn from the classification loss only), as in the paper's
hybrid loss.

Shapes: `GlimpseNetwork([glimpses (B, k, g, g, C), locations (B, 2)])` ->
`(B, units)`; `CoreNetwork(g (B, G), states)` -> `(h (B, U), new_states)`;
`LocationNetwork(h)` -> `(B, 2)`; `BaselineNetwork(h)` -> `(B, 1)`.

Usage:
>>> import numpy as np
>>> from keras_attn import ram
>>> images, l = np.ones((2, 28, 28, 1)), np.zeros((2, 2))
>>> sensor, core = ram.GlimpseSensor(), ram.CoreNetwork()
>>> g = ram.GlimpseNetwork()([sensor(images, l), l])
>>> h, states = core(g, core.initial_states(g))
>>> mu = ram.LocationNetwork()(h)  # in [-1, 1]
>>> tuple(g.shape), tuple(h.shape), tuple(mu.shape)
((2, 256), (2, 256), (2, 2))

Deviations, stated plainly:

- `LocationNetwork(hidden_units=n)` optionally inserts a ReLU layer before
  the tanh head (as the popular PyTorch port); the default `0` is the
  paper's linear head. The tanh keeps the mean in `[-1, 1]`; the paper
  does not say how it bounded the mean.
- All four blocks compute in float32 (the policy's log-density and the
  rectifier RNN are sensitive to float16); they accept any input dtype.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.utils import validation

CORES = ("rnn", "lstm")


def _dense(units, name, activation=None):
    return keras.layers.Dense(
        units, activation=activation, name=name, dtype="float32"
    )


def _float32_spec(layer, args, kwargs):
    # The outputs are float32 whatever the dtype policy; Keras' default spec
    # (compute_output_shape + compute dtype) would claim float16 under
    # mixed precision.
    shapes = keras.tree.map_structure(lambda t: tuple(t.shape), args)
    kwargs = keras.tree.map_structure(lambda t: tuple(t.shape), kwargs)
    out = layer.compute_output_shape(*shapes, **kwargs)
    return keras.tree.map_shape_structure(
        lambda s: keras.KerasTensor(s, "float32"), out
    )


def _flat_size(shape, layer, argument):
    size = 1
    for d in shape[1:]:
        if d is None:
            validation.fail(layer, f"{argument} shape", tuple(shape),
                        "fully known dimensions except the batch axis")
        size *= int(d)
    return size


@keras.saving.register_keras_serializable(package="keras_attn")
class GlimpseNetwork(keras.layers.Layer):
    """Glimpse network f_g of the Recurrent Attention Model.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247):
    `h_g = ReLU(W_1 rho + b_1)`, `h_l = ReLU(W_2 l + b_2)`,
    `g = ReLU(W_3 h_g + W_4 h_l + b)` (the two output projections share one
    bias, as a sum of two linear layers would).

    Args:
        what_units: units of the "what" pathway `h_g` (paper: 128).
        where_units: units of the "where" pathway `h_l` (paper: 128).
        units: output units of `g` (paper: 256).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[glimpses, locations]`, glimpses of any shape
            `(batch, ...)` (flattened; e.g. the `GlimpseSensor` output) and
            locations `(batch, 2)`.

    Returns:
        `(batch, units)`, float32.

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import GlimpseNetwork
    >>> net = GlimpseNetwork(what_units=128, where_units=128, units=256)
    >>> tuple(net([np.ones((2, 3, 8, 8, 1)), np.zeros((2, 2))]).shape)
    (2, 256)
    """

    def __init__(self, what_units=128, where_units=128, units=256,
                 **kwargs):
        validation.check_positive_int(self, "what_units", what_units)
        validation.check_positive_int(self, "where_units", where_units)
        validation.check_positive_int(self, "units", units)
        super().__init__(**kwargs)
        self.what_units = what_units
        self.where_units = where_units
        self.units = units
        self.what = _dense(what_units, "what", "relu")
        self.where = _dense(where_units, "where", "relu")
        self.what_out = _dense(units, "what_out")
        # One bias for the sum of the two output projections.
        self.where_out = keras.layers.Dense(
            units, use_bias=False, name="where_out", dtype="float32"
        )

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            validation.fail(self, "inputs", input_shape,
                        "a list [glimpses, locations]")
        glimpse_shape, location_shape = input_shape
        size = _flat_size(glimpse_shape, self, "glimpses")
        if tuple(location_shape)[1:] != (2,):
            validation.fail(self, "locations shape", tuple(location_shape),
                        "(batch, 2)")
        self.what.build((None, size))
        self.where.build((None, 2))
        self.what_out.build((None, self.what_units))
        self.where_out.build((None, self.where_units))
        self.built = True

    def call(self, inputs):
        glimpses, locations = inputs
        glimpses = ops.cast(glimpses, "float32")
        flat = ops.reshape(glimpses, (ops.shape(glimpses)[0], -1))
        h_g = self.what(flat)
        h_l = self.where(ops.cast(locations, "float32"))
        return ops.relu(self.what_out(h_g) + self.where_out(h_l))

    def compute_output_spec(self, *args, **kwargs):
        return _float32_spec(self, args, kwargs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            what_units=self.what_units,
            where_units=self.where_units,
            units=self.units,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class CoreNetwork(keras.layers.Layer):
    """Recurrent core f_h of the Recurrent Attention Model.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247): `core="rnn"` is
    the paper's rectifier network `h_t = ReLU(W_h h_{t-1} + W_g g_t + b)`
    (a `SimpleRNNCell` with ReLU); `core="lstm"` an `LSTMCell`. One call is
    one time step; the states start at zero (`initial_states`).

    Args:
        units: size of the hidden state `h_t` (paper: 256).
        core: `"rnn"` or `"lstm"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, features)`, the glimpse feature `g_t`.
        states: list of state tensors (`[h]` for rnn, `[h, c]` for lstm).

    Returns:
        `(h_t, new_states)`, `h_t` of shape `(batch, units)`, float32.

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import CoreNetwork
    >>> core = CoreNetwork(units=256, core="rnn")
    >>> g = np.ones((2, 256), "float32")
    >>> h, states = core(g, core.initial_states(g))
    >>> tuple(h.shape), len(states)
    ((2, 256), 1)
    """

    def __init__(self, units=256, core="rnn", **kwargs):
        validation.check_positive_int(self, "units", units)
        validation.check_choice(self, "core", core, CORES)
        super().__init__(**kwargs)
        self.units = units
        self.core = core
        if core == "rnn":
            self.cell = keras.layers.SimpleRNNCell(
                units, activation="relu", name="cell", dtype="float32"
            )
        else:
            self.cell = keras.layers.LSTMCell(
                units, name="cell", dtype="float32"
            )

    @property
    def num_states(self):
        return 1 if self.core == "rnn" else 2

    def initial_states(self, inputs):
        """Zero states with the batch size of `inputs` (any tensor of rank
        >= 2; symbolic tensors too, so a functional model can start from
        them)."""
        first = inputs
        while len(first.shape) > 2:
            first = first[:, 0]
        column = ops.zeros_like(ops.cast(first[:, :1], "float32"))
        zeros = column * ops.zeros((1, self.units), "float32")
        return [zeros] * self.num_states

    def build(self, inputs_shape, states_shape=None):
        self.cell.build((None, int(inputs_shape[-1])))
        self.built = True

    def call(self, inputs, states):
        states = list(states)
        h, new_states = self.cell(
            ops.cast(inputs, "float32"),
            states[0] if self.core == "rnn" else states,
        )
        new_states = list(new_states) if isinstance(
            new_states, (list, tuple)) else [new_states]
        return h, new_states

    def compute_output_spec(self, *args, **kwargs):
        return _float32_spec(self, args, kwargs)

    def compute_output_shape(self, inputs_shape, states_shape=None):
        state = (inputs_shape[0], self.units)
        return state, [state] * self.num_states

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, core=self.core)
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class LocationNetwork(keras.layers.Layer):
    """Location network f_l: mean of the Gaussian location policy.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247):
    `mu_t = tanh(W stop_gradient(h_t) + b)`; the agent's next location is
    `l ~ N(mu_t, sigma^2 I)` (sampling and log-densities live in
    `RecurrentAttentionModel`). The stop-gradient makes REINFORCE train this
    network only, never the core.

    Args:
        hidden_units: `0` (paper: linear head) or the units of an extra ReLU
            layer before the head.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: hidden state `(batch, units)`.

    Returns:
        `(batch, 2)` policy mean `(x, y)` in `[-1, 1]`, float32.

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import LocationNetwork
    >>> tuple(LocationNetwork()(np.zeros((2, 256))).shape)
    (2, 2)
    """

    def __init__(self, hidden_units=0, **kwargs):
        validation.check_positive_int(
            self, "hidden_units", hidden_units, minimum=0
        )
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.hidden = (
            _dense(hidden_units, "hidden", "relu") if hidden_units else None
        )
        self.head = _dense(2, "head", "tanh")

    def build(self, input_shape):
        size = int(input_shape[-1])
        if self.hidden is not None:
            self.hidden.build((None, size))
            size = self.hidden_units
        self.head.build((None, size))
        self.built = True

    def call(self, inputs):
        x = ops.stop_gradient(ops.cast(inputs, "float32"))
        if self.hidden is not None:
            x = self.hidden(x)
        return self.head(x)

    def compute_output_spec(self, *args, **kwargs):
        return _float32_spec(self, args, kwargs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class BaselineNetwork(keras.layers.Layer):
    """Baseline network f_b: `b_t = w . stop_gradient(h_t) + c`.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247): the learned
    baseline that reduces the variance of REINFORCE, trained by the squared
    error `(R - b_t)^2` only (hence the stop-gradient on `h_t`).

    Args:
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: hidden state `(batch, units)`.

    Returns:
        `(batch, 1)`, float32.

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import BaselineNetwork
    >>> tuple(BaselineNetwork()(np.zeros((2, 256))).shape)
    (2, 1)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = _dense(1, "head")

    def build(self, input_shape):
        self.head.build((None, int(input_shape[-1])))
        self.built = True

    def call(self, inputs):
        return self.head(ops.stop_gradient(ops.cast(inputs, "float32")))

    def compute_output_spec(self, *args, **kwargs):
        return _float32_spec(self, args, kwargs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)
