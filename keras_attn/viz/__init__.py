"""Pictures of what attention models look at (matplotlib, lazily imported)."""

from keras_attn.viz.attention_maps import compare_with_grad_cam
from keras_attn.viz.attention_maps import overlay_maps
from keras_attn.viz.attention_maps import plot_model_attention
from keras_attn.viz.attention_maps import plot_stn
from keras_attn.viz.attention_maps import reduce_attention
from keras_attn.viz.attention_maps import spatial_attention_maps
from keras_attn.viz.glimpses import draw_glimpses
from keras_attn.viz.glimpses import glimpse_boxes
from keras_attn.viz.grad_cam import grad_cam
