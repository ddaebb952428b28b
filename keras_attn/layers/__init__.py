"""Attention layers. Every public layer is registered for `.keras` loading
under the package name `keras_attn`."""
from keras_attn.layers.attention_augmented_conv import AttentionAugmentedConv2D
from keras_attn.layers.attention_factory import available_attentions
from keras_attn.layers.attention_factory import get_attention
from keras_attn.layers.attention_stem import AttentionStem
from keras_attn.layers.cbam import CBAM
from keras_attn.layers.cbam import ChannelAttention
from keras_attn.layers.cbam import SpatialAttention
from keras_attn.layers.identity_gate import IdentityGate
from keras_attn.layers.local_self_attention import LocalSelfAttention2D
from keras_attn.layers.ltpa_attention import LTPAAttention
from keras_attn.layers.pre_act_bottleneck import PreActBottleneck
from keras_attn.layers.residual_attention_module import ResidualAttentionModule
from keras_attn.layers.spatial_transformer import SpatialTransformer
from keras_attn.layers.squeeze_excite import SqueezeExcite
