"""Helpers every part of `keras_attn` shares, below all of them.

`keras_attn.utils` is the bottom layer of the package: it imports only the
standard library, Keras and NumPy, never another `keras_attn` module, so
that `ops`, `data`, `layers`, `models`, `ram` and `viz` can all use it
(`tests/test_import_layers.py` checks the order).

- `validation`: argument and shape checks raising the package's standard
  `ValueError` (`"<function>: invalid `<argument>`; expected <allowed>.
  Received: <argument>=<value>"`).
"""
