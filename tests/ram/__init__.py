"""Tests of the Recurrent Attention Model package `keras_attn.ram`."""
