"""Training recipes: `python -m recipes.NAME` from the checkout root,
`python -m keras_attn.recipes.NAME` installed (the same modules)."""
