"""Pictures of trainable attention maps, Grad-CAM and spatial transformers.

Papers whose maps are drawn: Jetley et al., "Learn To Pay Attention", ICLR
2018 (LTPA, Eq. 2-3: one softmax map per level); Woo et al., "CBAM", ECCV
2018 (Eq. 3: spatial map `M_s`); Wang et al., "Residual Attention Network",
CVPR 2017 (Eq. 1: soft mask `M`); Bello et al., "Attention Augmented
Convolutional Networks", ICCV 2019 (Eq. 1: per-head `softmax(QK^T)`);
Ramachandran et al., "Stand-Alone Self-Attention in Vision Models", NeurIPS
2019 (Eq. 2 and the stem of Sec. 3.2); Jaderberg et al., "Spatial
Transformer Networks", NIPS 2015 (warped inputs); Selvaraju et al.,
"Grad-CAM", ICCV 2017 (see `keras_attn.viz.grad_cam`).

Every map is first reduced to one `(B, h, w)` array per layer by
`reduce_attention(attention, kind)`, the NumPy face of
`keras_attn.ops.reduce_attention_map` (the exported `attention_maps` output
runs the same op). Each layer declares the kind of every map it returns in
its `attention_kinds` (`"spatial"`, `"mask"`, `"global"`, `"local"`,
`"block"`; `"channel"` and `"none"` are not drawn); the layouts and what
each reduction means are in `keras_attn.ops.map_reduction`.

    maps, skipped = spatial_attention_maps(model, images)  # {name: (B,h,w)}
    fig = plot_model_attention(model, images, "attention.png")
    fig = compare_with_grad_cam(model, images, "stage3_block2_conv2")

Deviations, stated plainly:

- "Received attention" for global and local self-attention is a summary
  chosen here (the papers draw single query rows): averaging over all
  queries shows which positions the layer reads most. For `"local"` and
  `"block"` the sum is divided by `h w`, so the three kinds agree (for a
  window as large as the image `"local"` equals `"global"`).
- Maps of other sizes are resized to the image with bilinear interpolation
  (half-pixel centres, as `keras.ops.image.resize`), and each drawn map is
  min-max scaled per image: colours show where a map is high relative to
  the rest of that image, not absolute values (an LTPA map sums to 1, a
  CBAM map lies in (0, 1)).
- `plot_model_attention` skips non-spatial maps and names them in a note at
  the bottom of the figure; `theta` of a SpatialTransformer is drawn by
  `plot_stn` from the warped images, not here.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_attn.ops import map_reduction
from keras_attn.utils.validation import fail
from keras_attn.viz.plotting import check_images
from keras_attn.viz.plotting import figure_grid
from keras_attn.viz.plotting import min_max_scale
from keras_attn.viz.plotting import require_matplotlib
from keras_attn.viz.plotting import resize_bilinear
from keras_attn.viz.plotting import show_image

# What each map is comes from the layer's own `attention_kinds`; the
# reduction is `keras_attn.ops.reduce_attention_map`, the one the exported
# graph runs too.
KINDS = map_reduction.KINDS


def reduce_attention(attention, kind, grid=None):
    """One `(B, h, w)` map per image from a layer's attention output.

    Args:
        attention: the map a keras_attn layer returns (see the module
            docstring for the layouts).
        kind: one of `"spatial"`, `"mask"`, `"global"`, `"local"`,
            `"block"`, `"channel"`, `"none"`.
        grid: `(h, w)` of the query grid for `"global"`; when `None` the
            length must be a perfect square.

    Returns:
        float64 NumPy `(B, h, w)`, or `None` for `"channel"` and `"none"`.
    """
    name = "reduce_attention"
    if kind not in KINDS:
        fail(name, "kind", kind, f"one of {KINDS}")
    if kind not in map_reduction.SPATIAL_KINDS:
        return None
    a = np.asarray(attention, dtype=np.float32)
    try:
        map_reduction.check_layout(kind, a.shape, grid)
    except ValueError as error:  # the same check, under this name
        raise ValueError(str(error).replace("reduce_attention_map",
                                            name)) from None
    return np.asarray(ops.convert_to_numpy(
        map_reduction.reduce_attention_map(a, kind, grid)), np.float64)


def map_kind(layer, index, attention_shape):
    """The kind (one of `KINDS`) of the `index`-th map `layer` returns.

    A layer that declares `attention_kinds` gives its own (CBAM:
    `("channel", "spatial")`); for another layer the kind is guessed from
    `attention_shape` alone: `(B, h, w)` (but not a `(B, 2, 3)` affine
    `theta`) or `(B, h, w, 1)` is `"spatial"`, anything else `"none"`.
    `layer` and `index` are as
    `keras_attn.models.attention_maps.attention_map_layers` lists them.
    """
    kinds = map_reduction.map_kinds(layer)
    if kinds is not None and index < len(kinds):
        return kinds[index]
    # A layer this module does not know: guess from the shape alone.
    if len(attention_shape) == 3 and attention_shape[1:] != (2, 3):
        return "spatial"
    if len(attention_shape) == 4 and attention_shape[-1] == 1:
        return "spatial"
    return "none"


def spatial_attention_maps(model, images):
    """Every attention map of `model` on `images`, reduced to `(B, h, w)`.

    Args:
        model: a functional model from `keras_attn.models` (maps on).
        images: `(B, H, W, C)` inputs of the model.

    Returns:
        `(maps, skipped)`: `maps` is `{name: float64 (B, h, w)}` in model
        order, names as in `keras_attn.models.attention_outputs`;
        `skipped` is `{name: kind}` for the non-spatial maps.
    """
    from keras import ops

    from keras_attn.models import attention_model
    from keras_attn.models.attention_maps import attention_map_layers

    outputs = attention_model(model)([np.asarray(images, np.float32)])
    maps, skipped = {}, {}
    for name, layer, index in attention_map_layers(model):
        attention = np.asarray(ops.convert_to_numpy(outputs[name]))
        kind = map_kind(layer, index, attention.shape)
        grid = None
        if kind == "global":
            grid = tuple(layer.output[0].shape[1:3])
        reduced = reduce_attention(attention, kind, grid=grid)
        if reduced is None:
            skipped[name] = kind
        else:
            maps[name] = reduced
    return maps, skipped


def _draw(function, images, maps, path, titles, alpha, cmap, panel_size,
          dpi, note=None):
    images = check_images(function, images)
    batch, height, width = images.shape[:3]
    checked = []
    for i, m in enumerate(maps):
        m = np.asarray(m, dtype=np.float64)
        if m.ndim == 4 and m.shape[-1] == 1:
            m = m[..., 0]
        if m.ndim != 3 or m.shape[0] != batch:
            fail(function, f"maps[{i}]", f"array of shape {m.shape}",
                 f"shape ({batch}, h, w): one map per image")
        checked.append(resize_bilinear(m, height, width))
    if titles is not None and len(titles) != len(checked):
        fail(function, "titles", titles,
             f"{len(checked)} titles, one per map")
    if not 0 <= alpha <= 1:
        fail(function, "alpha", alpha, "a number in [0, 1]")
    columns = 1 + len(checked)
    figure, axes = figure_grid(function, batch, columns, panel_size, dpi)
    for row in range(batch):
        show_image(axes[row, 0], images[row])
        for col, m in enumerate(checked, start=1):
            ax = axes[row, col]
            show_image(ax, images[row])
            ax.imshow(min_max_scale(m[row]), cmap=cmap, alpha=alpha, vmin=0,
                      vmax=1, interpolation="bilinear")
            if row == 0 and titles is not None:
                ax.set_title(str(titles[col - 1]), fontsize=7)
        if row == 0:
            axes[row, 0].set_title("image", fontsize=7)
    bottom = 0.02
    if note:
        figure.text(0.01, 0.005, note, fontsize=6, va="bottom", wrap=True)
        bottom = 0.06
    figure.subplots_adjust(left=0.01, right=0.99, bottom=bottom, top=0.92,
                           wspace=0.04, hspace=0.06)
    if path is not None:
        figure.savefig(path, format="png", dpi=dpi)
    return figure


def overlay_maps(images, maps, path=None, titles=None, alpha=0.5,
                 cmap="jet", panel_size=2.0, dpi=100):
    """Each image, then each of its maps overlaid as a heat map.

    Args:
        images: `(B, H, W)`, `(B, H, W, 1)` or `(B, H, W, 3)`.
        maps: one `(B, h, w)` (or `(B, h, w, 1)`) array, or a list of them;
            any `h, w` (resized bilinearly to the image).
        path: write a PNG there when given.
        titles: one title per map (column headings).
        alpha: opacity of the heat map over the image.
        cmap: matplotlib colormap name.
        panel_size: inches per panel side: the PNG is
            `(1 + len(maps)) * panel_size * dpi` pixels wide and
            `B * panel_size * dpi` high.
        dpi: dots per inch.

    Returns:
        The `matplotlib.figure.Figure` (Agg, never shown).

    Raises:
        ImportError: matplotlib is missing (`pip install keras_attn[viz]`).
        ValueError: shapes or arguments that do not fit.
    """
    if not isinstance(maps, (list, tuple)):
        maps = [maps]
    return _draw("overlay_maps", images, list(maps), path, titles, alpha,
                 cmap, panel_size, dpi)


def plot_model_attention(model, images, path=None, alpha=0.5, cmap="jet",
                         panel_size=2.0, dpi=100):
    """Per image: the image and every spatial attention map of `model`.

    Maps are reduced by `spatial_attention_maps` (see the module docstring);
    non-spatial ones (channel gates, `theta`) are listed in a note at the
    bottom instead of drawn.

    Args:
        model: a functional model from `keras_attn.models`, maps on.
        images: `(B, H, W, C)` inputs of the model.
        path, alpha, cmap, panel_size, dpi: as in `overlay_maps`.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: the model computes no attention map, or none is spatial.
    """
    name = "plot_model_attention"
    require_matplotlib(name)
    maps, skipped = spatial_attention_maps(model, images)
    if not maps:
        fail(name, "model", model.name,
             "a model with at least one spatial attention map; its maps "
             f"are all non-spatial: {skipped}")
    note = None
    if skipped:
        note = "not spatial, not drawn: " + ", ".join(
            f"{n} ({kind})" for n, kind in skipped.items()
        )
    return _draw(name, _model_images(name, images), list(maps.values()),
                 path, list(maps), alpha, cmap, panel_size, dpi, note=note)


def _model_images(function, images):
    images = np.asarray(images)
    if images.ndim != 4:
        fail(function, "images", f"array of shape {images.shape}",
             "(batch, height, width, channels) inputs of the model")
    return images


def compare_with_grad_cam(model, images, layer_name, attention_layer=None,
                          path=None, class_index=None, alpha=0.5,
                          cmap="jet", panel_size=2.0, dpi=100):
    """Image | trainable attention map | Grad-CAM, one row per image.

    Args:
        model: a functional model from `keras_attn.models`, maps on.
        images: `(B, H, W, C)` inputs of the model.
        layer_name: the layer Grad-CAM reads (see `grad_cam`).
        attention_layer: name of the attention map (a key of
            `spatial_attention_maps`); `None` takes the last spatial map in
            model order (the deepest, usually nearest to `layer_name`).
        class_index: the class for Grad-CAM (`None`: the prediction).
        path, alpha, cmap, panel_size, dpi: as in `overlay_maps`.

    Returns:
        The `matplotlib.figure.Figure` (3 panels per row).
    """
    from keras_attn.viz.grad_cam import grad_cam

    name = "compare_with_grad_cam"
    require_matplotlib(name)
    images = _model_images(name, images)
    maps, skipped = spatial_attention_maps(model, images)
    if attention_layer is None:
        if not maps:
            fail(name, "model", model.name,
                 "a model with a spatial attention map")
        attention_layer = list(maps)[-1]
    if attention_layer not in maps:
        fail(name, "attention_layer", attention_layer,
             f"one of the spatial maps {sorted(maps)}"
             + (f" (not spatial: {sorted(skipped)})" if skipped else ""))
    cam = grad_cam(model, images, layer_name, class_index=class_index)
    return _draw(name, images, [maps[attention_layer], cam], path,
                 [attention_layer, f"Grad-CAM {layer_name}"], alpha, cmap,
                 panel_size, dpi)


def plot_stn(images, warped, path=None, panel_size=2.0, dpi=100):
    """Input | spatial-transformer output, one row per image.

    Args:
        images: `(B, H, W)`, `(B, H, W, 1)` or `(B, H, W, 3)` inputs.
        warped: the transformer's outputs for them, same layouts, any size.
        path, panel_size, dpi: as in `overlay_maps`.

    Returns:
        The `matplotlib.figure.Figure` (2 panels per row).
    """
    name = "plot_stn"
    images = check_images(name, images)
    warped = check_images(name, warped)
    if len(warped) != len(images):
        fail(name, "warped", f"{len(warped)} images",
             f"one warped image per input image ({len(images)})")
    figure, axes = figure_grid(name, len(images), 2, panel_size, dpi)
    for row in range(len(images)):
        show_image(axes[row, 0], images[row])
        show_image(axes[row, 1], warped[row])
    axes[0, 0].set_title("input", fontsize=7)
    axes[0, 1].set_title("warped", fontsize=7)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.92,
                           wspace=0.04, hspace=0.06)
    if path is not None:
        figure.savefig(path, format="png", dpi=dpi)
    return figure
