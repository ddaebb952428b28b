"""Pictures of what attention models look at (matplotlib, lazily imported)."""

from keras_attn.viz.glimpses import draw_glimpses
from keras_attn.viz.glimpses import glimpse_boxes
