"""Glimpse paths of a Recurrent Attention Model, as boxes and pictures.

Paper: Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247 (Sec. 3.1, glimpse
sensor; Fig. 2 and 3 draw glimpse paths like these).

`locations` are the glimpse centres `l_t = (x, y)` in `[-1, 1]`, shape
`(batch, num_glimpses, 2)`, in the convention of
`keras_attn.ops.affine_grid` ("corners"): `x = -1` / `+1` are the CENTRES of
the first / last pixel column, so column `u = (x + 1) (W - 1) / 2` and row
`v = (y + 1) (H - 1) / 2` (pixel centres at integers, as `imshow` draws
them). The retina patch of scale `k` (`k = 0 .. num_scales - 1`) covers a
square of `glimpse_size * scale_factor**k` pixels centred there.

    boxes = glimpse_boxes(locations, (60, 60))  # (B, T, scales, 4)
    fig = draw_glimpses(images, locations, "glimpses.png", labels=y)

Deviations, stated plainly:

- A box is the AREA a patch covers, edge to edge: `(u - side / 2, v - side
  / 2, u + side / 2, v + side / 2)` in pixel coordinates whose pixel
  centres are integers. A sensor reading the `side x side` pixel centres
  `u - (side - 1) / 2 ... u + (side - 1) / 2` (as `keras_attn.ram`'s
  glimpse sensor does, `theta` scale `(side - 1) / (W - 1)`) reads exactly
  the pixels inside the box.
- Boxes are not clipped to the image: a glimpse near or beyond the border
  (the sensor pads with zeros) gives a box partly or wholly outside
  `[-0.5, W - 0.5] x [-0.5, H - 0.5]`; the picture clips them to the axes.
"""

from __future__ import annotations

import numpy as np

from keras_attn.utils.validation import fail
from keras_attn.viz.plotting import INSTALL
from keras_attn.viz.plotting import check_images
from keras_attn.viz.plotting import show_image


def _check_geometry(function, glimpse_size, num_scales, scale_factor):
    for argument, value in (("glimpse_size", glimpse_size),
                            ("num_scales", num_scales)):
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or value < 1):
            fail(function, argument, value, "an integer >= 1")
    if (isinstance(scale_factor, bool)
            or not isinstance(scale_factor, (int, float, np.number))
            or not scale_factor > 0):
        fail(function, "scale_factor", scale_factor, "a number > 0")


def _check_locations(function, locations):
    locations = np.asarray(locations, dtype=np.float64)
    if locations.ndim != 3 or locations.shape[-1] != 2:
        fail(function, "locations", f"array of shape {locations.shape}",
             "shape (batch, num_glimpses, 2) holding (x, y) in [-1, 1]")
    if not np.all(np.isfinite(locations)):
        fail(function, "locations", "non-finite values", "finite numbers")
    return locations


def _image_size(function, image_shape):
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
        for d in shape
    ):
        fail(function, "image_shape", image_shape,
             "(height, width) or (height, width, channels) of integers >= 1")
    return int(shape[0]), int(shape[1])


def _boxes(locations, height, width, glimpse_size, num_scales, scale_factor):
    u = (locations[..., 0] + 1.0) * (width - 1) / 2.0
    v = (locations[..., 1] + 1.0) * (height - 1) / 2.0
    half = glimpse_size * float(scale_factor) ** np.arange(num_scales) / 2.0
    u, v = u[..., None], v[..., None]
    return np.stack([u - half, v - half, u + half, v + half], axis=-1)


def glimpse_boxes(locations, image_shape, glimpse_size=8, num_scales=3,
                  scale_factor=2):
    """Pixel rectangles of every glimpse step and scale.

    Args:
        locations: `(batch, num_glimpses, 2)` centres `(x, y)` in `[-1, 1]`
            (values outside are allowed: the glimpse is past the border).
        image_shape: `(height, width)` or `(height, width, channels)`.
        glimpse_size: side `g` in pixels of the finest patch.
        num_scales: number of patches per glimpse.
        scale_factor: each patch is `scale_factor` times the previous side.

    Returns:
        float64 `(batch, num_glimpses, num_scales, 4)` boxes `(x0, y0, x1,
        y1)` in pixels (column, row; pixel centres at integers), finest
        scale first.
    """
    name = "glimpse_boxes"
    _check_geometry(name, glimpse_size, num_scales, scale_factor)
    locations = _check_locations(name, locations)
    height, width = _image_size(name, image_shape)
    return _boxes(locations, height, width, glimpse_size, num_scales,
                  scale_factor)


def _check_per_image(function, argument, values, batch):
    if values is None:
        return None
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != batch:
        fail(function, argument, f"values of shape {array.shape}",
             f"one value per image: shape ({batch},)")
    return array.tolist()


def draw_glimpses(images, locations, path=None, glimpse_size=8,
                  num_scales=3, scale_factor=2, labels=None,
                  predictions=None, columns=None, panel_size=2.5, dpi=100):
    """Draw each image with its glimpse path and retina boxes.

    One panel per image: the image in grey, a line through the glimpse
    centres with the steps numbered from 1, and at each step the boxes of
    `glimpse_boxes` (one colour per step, larger scales lighter). Titles
    show `labels` / `predictions` when given (red when they differ).

    Args:
        images: `(batch, H, W)`, `(batch, H, W, 1)` or `(batch, H, W, 3)`.
        locations: `(batch, num_glimpses, 2)` centres `(x, y)` in `[-1, 1]`.
        path: write a PNG there when given.
        glimpse_size, num_scales, scale_factor: as in `glimpse_boxes`.
        labels, predictions: optional, one per image (ints or strings).
        columns: panels per row (default `min(batch, 8)`).
        panel_size: inches per panel side; the figure is `columns *
            panel_size * dpi` by `rows * panel_size * dpi` pixels.
        dpi: dots per inch of the PNG.

    Returns:
        The `matplotlib.figure.Figure` (rendered with Agg, never shown).

    Raises:
        ImportError: matplotlib is missing (`pip install keras_attn[viz]`).
        ValueError: shapes or arguments that do not fit.
    """
    name = "draw_glimpses"
    try:
        from matplotlib import colormaps
        from matplotlib import patches
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"{name} needs matplotlib; install it with `{INSTALL}` "
            "(or `pip install matplotlib`)."
        ) from error

    _check_geometry(name, glimpse_size, num_scales, scale_factor)
    images = check_images(name, images)
    locations = _check_locations(name, locations)
    batch, height, width = images.shape[:3]
    if locations.shape[0] != batch:
        fail(name, "locations", f"array of shape {locations.shape}",
             f"one row per image: shape ({batch}, num_glimpses, 2)")
    labels = _check_per_image(name, "labels", labels, batch)
    predictions = _check_per_image(name, "predictions", predictions, batch)
    if columns is None:
        columns = min(batch, 8)
    if (isinstance(columns, bool) or not isinstance(columns, (int, np.integer))
            or columns < 1):
        fail(name, "columns", columns, "an integer >= 1")
    columns = min(int(columns), batch)
    for argument, value in (("panel_size", panel_size), ("dpi", dpi)):
        if isinstance(value, bool) or not isinstance(
            value, (int, float, np.number)
        ) or not value > 0:
            fail(name, argument, value, "a number > 0")
    rows = -(-batch // columns)
    boxes = _boxes(locations, height, width, glimpse_size, num_scales,
                   scale_factor)
    centres = (boxes[..., 0, :2] + boxes[..., 0, 2:]) / 2.0

    # A bare Figure on an Agg canvas: no pyplot, no global backend switch,
    # no window, and no figure kept alive by pyplot's registry.
    figure = Figure(figsize=(columns * panel_size, rows * panel_size),
                    dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    num_glimpses = locations.shape[1]
    step_colours = colormaps["autumn"](
        np.linspace(0.0, 0.85, max(num_glimpses, 1))
    )
    for index, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if index >= batch:
            continue
        show_image(ax, images[index])
        for step in range(num_glimpses):
            colour = step_colours[step]
            for scale in range(num_scales):
                x0, y0, x1, y1 = boxes[index, step, scale]
                ax.add_patch(patches.Rectangle(
                    (x0, y0), x1 - x0, y1 - y0, fill=False,
                    edgecolor=colour, linewidth=1.0,
                    alpha=1.0 / (1.0 + scale),  # larger scales lighter
                ))
            ax.annotate(str(step + 1), centres[index, step], color="cyan",
                        fontsize=7, ha="left", va="bottom",
                        xytext=(2, 2), textcoords="offset points")
        ax.plot(centres[index, :, 0], centres[index, :, 1], "-o",
                color="cyan", linewidth=1.0, markersize=2.5)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        title = []
        if labels is not None:
            title.append(f"label {labels[index]}")
        if predictions is not None:
            title.append(f"pred {predictions[index]}")
        if title:
            wrong = labels is not None and predictions is not None and (
                str(labels[index]) != str(predictions[index])
            )
            ax.set_title(" / ".join(title), fontsize=8,
                         color="red" if wrong else "black")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9,
                           wspace=0.05, hspace=0.2)
    if path is not None:
        figure.savefig(path, format="png", dpi=dpi)
    return figure
