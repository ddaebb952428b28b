"""Model builders: backbones carrying attention, each with a baseline."""
from keras_attn.models.aa_resnet import aa_resnet
from keras_attn.models.aa_resnet import aa_wide_resnet
from keras_attn.models.attention_maps import attention_model
from keras_attn.models.attention_maps import attention_outputs
from keras_attn.models.ltpa_vgg import ltpa_vgg
from keras_attn.models.residual_attention_network import (
    residual_attention_network,
)
from keras_attn.models.resnet import resnet
from keras_attn.models.retrofit import add_attention
from keras_attn.models.sasa_resnet import sasa_resnet
from keras_attn.models.stn_classifier import stn_classifier
