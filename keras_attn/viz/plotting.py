"""Drawing helpers every picture of `keras_attn.viz` shares.

Checks of the images to draw, the bilinear resize of maps to the image, the
per-image min-max scaling of a drawn map, and a grid of panels on a bare
Agg figure (no pyplot state, no window). matplotlib is imported only by the
functions that draw, so this module imports without it.

    images = check_images("my_plot", images)       # (B, H, W) or (B, H, W, 3)
    maps = resize_bilinear(maps, *images.shape[1:3])
    figure, axes = figure_grid("my_plot", rows, columns, 2.0, 100)
    show_image(axes[0, 0], images[0])
    axes[0, 0].imshow(min_max_scale(maps[0]), cmap="jet", alpha=0.5)
"""

from __future__ import annotations

import numpy as np

from keras_attn.utils import validation

# How to get the optional plotting dependency, named in ImportErrors.
INSTALL = "pip install keras_attn[viz]"


def require_matplotlib(function):
    """`(colormaps, FigureCanvasAgg, Figure)` from matplotlib.

    Raises:
        ImportError: naming `function` and how to install matplotlib.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"{function} needs matplotlib; install it with `{INSTALL}` "
            "(or `pip install matplotlib`)."
        ) from error
    return colormaps, FigureCanvasAgg, Figure


def check_images(function, images):
    """Images to draw as a NumPy array: `(B, H, W)` grey (a trailing
    channel of 1 is dropped) or `(B, H, W, 3)` RGB, of a numeric dtype."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        validation.fail(
            function, "images", f"array of shape {images.shape}",
            "shape (batch, height, width), (batch, height, width, 1) or "
            "(batch, height, width, 3)")
    if not np.issubdtype(images.dtype, np.number):
        validation.fail(function, "images", f"array of dtype {images.dtype}",
                        "numbers")
    return images


def resize_bilinear(maps, height, width):
    """`(B, h, w)` -> float64 `(B, height, width)`, half-pixel centres, no
    antialiasing (what `keras.ops.image.resize(..., "bilinear")` does)."""
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[1:]

    def axis(out_size, in_size):
        src = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        src = np.clip(src, 0, in_size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    r0, r1, fr = axis(height, h)
    c0, c1, fc = axis(width, w)
    top = maps[:, r0][:, :, c0] * (1 - fc) + maps[:, r0][:, :, c1] * fc
    bottom = maps[:, r1][:, :, c0] * (1 - fc) + maps[:, r1][:, :, c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def min_max_scale(map_2d):
    """`map_2d` scaled to `[0, 1]` (its minimum to 0, maximum to 1); a
    constant map gives zeros."""
    low, high = float(map_2d.min()), float(map_2d.max())
    return (map_2d - low) / (high - low) if high > low else np.zeros_like(
        map_2d
    )


def show_image(ax, image):
    """Draw one `(H, W)` grey or `(H, W, 3)` RGB image on `ax`, pixel for
    pixel; values in `[0, 1]` keep their brightness (a wider range is
    stretched to fit)."""
    image = image.astype(np.float64)
    low, high = min(0.0, float(image.min())), max(1.0, float(image.max()))
    if image.ndim == 3:
        ax.imshow(np.clip((image - low) / (high - low), 0, 1),
                  interpolation="nearest")
    else:
        ax.imshow(image, cmap="gray", vmin=low, vmax=high,
                  interpolation="nearest")


def _check_number(function, argument, value):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.number)
    ) or not value > 0:
        validation.fail(function, argument, value, "a number > 0")


def figure_grid(function, rows, columns, panel_size, dpi):
    """`(figure, axes)`: a `rows x columns` grid of `panel_size`-inch
    panels, axes off, on a bare Agg figure (no pyplot state, no window);
    `axes` is always 2-D."""
    _, canvas, figure_class = require_matplotlib(function)
    _check_number(function, "panel_size", panel_size)
    _check_number(function, "dpi", dpi)
    # A bare Figure on an Agg canvas, as in `draw_glimpses`: no pyplot
    # state, no window.
    figure = figure_class(figsize=(columns * panel_size, rows * panel_size),
                          dpi=dpi)
    canvas(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return figure, axes
