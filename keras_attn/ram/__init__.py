"""Recurrent Attention Model (RAM): Mnih et al., "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247.

`GlimpseSensor` and the networks are backend-agnostic `keras.ops` layers;
`RecurrentAttentionModel` trains with REINFORCE and needs the TensorFlow
backend and TensorFlow Probability (imported lazily, on first use).
"""

from keras_attn.ram.glimpse_sensor import GlimpseSensor
from keras_attn.ram.networks import BaselineNetwork
from keras_attn.ram.networks import CoreNetwork
from keras_attn.ram.networks import GlimpseNetwork
from keras_attn.ram.networks import LocationNetwork
from keras_attn.ram.recurrent_attention_model import RecurrentAttentionModel

__all__ = [
    "BaselineNetwork",
    "CoreNetwork",
    "GlimpseNetwork",
    "GlimpseSensor",
    "LocationNetwork",
    "RecurrentAttentionModel",
]
