"""Pictures of semantic segmentations in the style of Detectron2's ``Visualizer``.

Names stay legible at any size: small pictures are drawn enlarged, the font grows with the
picture, and names that would overlap or leave the picture become a legend. Sizes are in pixels
of the output picture unless said otherwise.
"""
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.textpath import TextPath

from detectron2.utils.visualizer import Visualizer, VisImage

__all__ = ["draw_sem_seg_figure", "draw_subdivision_figure", "fit_within", "label_font_size",
           "resize_nearest"]

# Detectron2 outlines "stuff" regions in off-white.
_EDGE_COLOR = (1.0, 1.0, 240.0 / 255)
_BACKGROUND = 255  # of title and legend strips


def fit_within(size: Tuple[int, int], max_side: Optional[int]) -> Tuple[int, int]:
    """(width, height) ``size`` reduced, aspect kept, to at most ``max_side`` pixels wide and
    high (each side at least 1); unchanged if it fits or ``max_side`` is 0 / None."""
    width, height = size
    if not max_side or max(width, height) <= max_side:
        return width, height
    shrink = max_side / max(width, height)
    return max(1, round(width * shrink)), max(1, round(height * shrink))


def label_font_size(width: int, height: int) -> int:
    """Font size (pixel height of the em) for a picture of ``width`` x ``height`` pixels."""
    return max(12, round(math.sqrt(width * height) / 60))


def _points(font_px: float, dpi: float) -> float:
    """Matplotlib font sizes are points (1/72 inch); figures here have ``dpi`` pixels/inch."""
    return font_px * 72.0 / dpi


def _draw_regions(image_rgb, labels, colors, scale, alpha) -> Tuple[Visualizer, List[int]]:
    """Blend each class of ``labels`` (ids >= len(colors), e.g. ignore, are left out) into the
    image, largest first; returns the Visualizer and the drawn class ids (by decreasing area)."""
    vis = Visualizer(image_rgb, scale=scale)
    ids, areas = np.unique(labels, return_counts=True)
    present = [int(c) for c in ids[np.argsort(-areas, kind="stable")] if 0 <= c < len(colors)]
    for c in present:
        vis.draw_binary_mask((labels == c).astype(np.uint8), color=np.asarray(colors[c]) / 255.0,
                             edge_color=_EDGE_COLOR, alpha=alpha)
    return vis, present


def _place_names(vis, labels, present, class_names, colors, font_px) -> Optional[list]:
    """Draw the class names on their regions (as Detectron2 places them) and return the text
    artists; if two overlap or one leaves the picture, remove them all and return None."""
    out = vis.output
    texts = []
    for c in present:
        _, components, stats, _ = cv2.connectedComponentsWithStats(
            (labels == c).astype(np.uint8), connectivity=8
        )
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        y, x = np.median(np.nonzero(components == largest), axis=1)
        # Visualizer.draw_text multiplies the size by the output scale
        color = 0.5 + 0.5 * np.asarray(colors[c]) / 255.0  # lighter, on the dark box
        vis.draw_text(class_names[c], (float(x), float(y)), color=color,
                      font_size=_points(font_px, out.dpi) / out.scale)
        texts.append(out.ax.texts[-1])
    renderer = out.canvas.get_renderer()
    margin = 2
    boxes = [t.get_window_extent(renderer).padded(margin) for t in texts]
    inside = all(
        b.x0 >= 0 and b.y0 >= 0 and b.x1 <= out.fig.bbox.x1 and b.y1 <= out.fig.bbox.y1
        for b in boxes
    )
    overlap = any(boxes[i].overlaps(boxes[j])
                  for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
    if inside and not overlap:
        return texts
    for t in texts:
        t.remove()
    return None


def _legend_layout(names: Sequence[str], font_px: int, max_width: int):
    """Entry positions (x, y of the swatch's top-left corner), width and height of a legend that
    wraps its entries (swatch + name) into rows no wider than ``max_width``."""
    pad, swatch, line = font_px // 2, font_px, round(1.6 * font_px)
    x, y, width, positions = pad, pad, 0, []
    for name in names:
        entry = swatch + pad + math.ceil(TextPath((0, 0), name, size=font_px).get_extents().width)
        if x > pad and x + entry > max_width - pad:
            x, y = pad, y + line
        positions.append((x, y))
        x += entry + font_px
        width = max(width, x - font_px + pad)
    return positions, width, y + swatch + pad


def _draw_legend(ax, names, colors, positions, font_px, dpi, unit, text_color):
    """Swatches and names at ``positions`` (output pixels; ``unit`` converts them to the axes'
    image coordinates)."""
    for name, color, (x, y) in zip(names, colors, positions):
        ax.add_patch(Rectangle((x * unit, y * unit), font_px * unit, font_px * unit,
                               facecolor=np.asarray(color) / 255.0, edgecolor=_EDGE_COLOR,
                               linewidth=1, zorder=11))
        ax.text((x + 1.5 * font_px) * unit, (y + font_px / 2) * unit, name,
                size=_points(font_px, dpi), family="sans-serif", color=text_color,
                verticalalignment="center", horizontalalignment="left", zorder=11)


def _strip(width: int, height: int) -> VisImage:
    return VisImage(np.full((height, width, 3), _BACKGROUND, dtype=np.uint8))


def _legend_strip(names, colors, width, font_px) -> np.ndarray:
    positions, _, height = _legend_layout(names, font_px, width)
    strip = _strip(width, height)
    _draw_legend(strip.ax, names, colors, positions, font_px, strip.dpi, 1.0, "black")
    return strip.get_image()


def _title_strip(title, width, font_px) -> np.ndarray:
    strip = _strip(width, round(1.8 * font_px))
    strip.ax.text(width / 2, 0.9 * font_px, title, size=_points(font_px, strip.dpi),
                  family="sans-serif", color="black", verticalalignment="center",
                  horizontalalignment="center")
    return strip.get_image()


def _side_by_side(images, gap):
    """Images of equal height, left to right, ``gap`` background columns apart."""
    spacer = np.full((images[0].shape[0], gap, 3), _BACKGROUND, dtype=np.uint8)
    parts = [images[0]]
    for image in images[1:]:
        parts += [spacer, image]
    return np.concatenate(parts, axis=1)


def draw_sem_seg_figure(
    image_rgb: np.ndarray,
    label_maps: Sequence[np.ndarray],
    class_names: Sequence[str],
    colors: Sequence[Tuple[int, int, int]],
    *,
    titles: Optional[Sequence[str]] = None,
    alpha: float = 0.5,
    min_side: int = 256,
    max_side: Optional[int] = None,
    legend_inside: bool = False,
    photo: bool = False,
) -> np.ndarray:
    """One panel per label map (side by side), each the image with the classes blended in.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        label_maps: (H, W) integer class-id maps (e.g. prediction, ground truth); ids outside
            ``[0, len(class_names))`` (the ignore label) are not coloured.
        class_names, colors: name and RGB colour (0..255) of each class id.
        titles: one title per label map, drawn above its panel; None: no titles.
        alpha: opacity of the class colours.
        min_side, max_side: a picture whose shorter side is under ``min_side`` is drawn
            enlarged to it, one whose longer side is over ``max_side`` reduced to it (costing
            what a ``max_side`` one does); ``max_side`` None: no limit (e.g. video frames).
        legend_inside: draw the legend in each panel's top-left corner, keeping the panels'
            size (video frames), instead of under the panels.
        photo: put the image, without classes, first (titled "image").

    Returns:
        (H', W', 3) uint8 RGB: the panels a few pixels apart, plus title and legend strips when
        used. One panel without titles and with ``legend_inside`` has the (scaled) image's size.
    """
    if len(class_names) != len(colors):
        raise ValueError(f"{len(class_names)} class names but {len(colors)} colours")
    if titles is not None and len(titles) != len(label_maps):
        raise ValueError(f"{len(titles)} titles for {len(label_maps)} panels")
    image_rgb = np.asarray(image_rgb)
    height, width = image_rgb.shape[:2]
    for labels in label_maps:
        if np.asarray(labels).shape != (height, width):
            raise ValueError(
                f"label map of shape {np.asarray(labels).shape} for an image of {height}x{width}"
            )
    if max_side and max(height, width) > max_side:
        width, height = fit_within((width, height), max_side)
        image_rgb = cv2.resize(np.ascontiguousarray(image_rgb), (width, height),
                               interpolation=cv2.INTER_AREA)
        label_maps = [resize_nearest(np.asarray(labels), (height, width)) for labels in label_maps]
    scale = max(1.0, min_side / min(height, width))
    font_px = label_font_size(round(width * scale), round(height * scale))
    panels, drawn = [], []
    for labels in label_maps:
        labels = np.asarray(labels)
        vis, present = _draw_regions(image_rgb, labels, colors, scale, alpha)
        panels.append(vis)
        drawn.append((present, _place_names(vis, labels, present, class_names, colors, font_px)))
    use_legend = any(texts is None for _, texts in drawn)
    legend_ids = sorted({c for present, _ in drawn for c in present})
    legend_names = [class_names[c] for c in legend_ids]
    legend_colors = [colors[c] for c in legend_ids]
    if use_legend:
        for _, texts in drawn:
            for t in texts or []:
                t.remove()  # names on every panel, or on none
        if legend_inside:
            for vis in panels:
                out = vis.output
                positions, legend_w, legend_h = _legend_layout(legend_names, font_px,
                                                               out.width * out.scale)
                unit = 1.0 / out.scale
                out.ax.add_patch(Rectangle((0, 0), legend_w * unit, legend_h * unit,
                                           facecolor="black", alpha=0.6, edgecolor="none",
                                           zorder=10))
                _draw_legend(out.ax, legend_names, legend_colors, positions, font_px, out.dpi,
                             unit, "white")
    images = [vis.output.get_image() for vis in panels]
    if photo:
        images.insert(0, Visualizer(image_rgb, scale=scale).output.get_image())
        if titles is not None:
            titles = ["image"] + list(titles)
    gap = max(2, font_px // 4)
    rows = []
    if titles is not None:
        rows.append(_side_by_side(
            [_title_strip(t, im.shape[1], font_px) for t, im in zip(titles, images)], gap))
    rows.append(_side_by_side(images, gap))
    if use_legend and not legend_inside and legend_names:
        rows.append(_legend_strip(legend_names, legend_colors, rows[-1].shape[1], font_px))
    return np.concatenate(rows, axis=0)


def resize_nearest(labels: np.ndarray, size: Tuple[int, int],
                   cell: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """(h, w) ``labels`` at ``size`` (H, W), each pixel taking the label of the cell its centre
    falls in; cells of ``cell`` (height, width) output pixels, default (H / h, W / w)."""
    cell = cell or (size[0] / labels.shape[0], size[1] / labels.shape[1])
    rows, cols = (np.minimum(((np.arange(n) + 0.5) / c).astype(int), m - 1)
                  for n, c, m in zip(size, cell, labels.shape))
    return labels[rows][:, cols]


def _dots(xy, cell, grid_shape, scale, size):
    """Bool mask of ``size`` (out_h, out_w) with one dot per point ``xy`` (P, 2), centred in its
    ``cell`` (h, w image pixels), half the cell's displayed side so the prediction shows around."""
    out_h, out_w = size
    mask = np.zeros((out_h, out_w), dtype=bool)
    rows = np.minimum((xy[:, 1] / cell[0]).astype(int), grid_shape[0] - 1)
    cols = np.minimum((xy[:, 0] / cell[1]).astype(int), grid_shape[1] - 1)
    cell_h, cell_w = cell[0] * scale, cell[1] * scale
    dot_h, dot_w = max(1, int(cell_h // 2)), max(1, int(cell_w // 2))
    top = np.floor(rows * cell_h + (cell_h - dot_h) / 2).astype(int).clip(0, out_h - dot_h)
    left = np.floor(cols * cell_w + (cell_w - dot_w) / 2).astype(int).clip(0, out_w - dot_w)
    dot_rows = top[:, None, None] + np.arange(dot_h)[:, None]  # (P, dot_h, 1)
    mask[dot_rows, left[:, None, None] + np.arange(dot_w)] = True  # with (P, 1, dot_w)
    return mask


def _grid_layout(count: int, columns: Optional[int]) -> int:
    """Panels per row: as asked, else 2 for 4 panels and 3 otherwise (at most ``count``)."""
    if columns:
        return max(1, min(columns, count))
    return count if count <= 3 else (2 if count == 4 else 3)


def draw_subdivision_figure(
    image_rgb: np.ndarray,
    coarse_labels: np.ndarray,
    coarse_stride: float,
    steps: Sequence,
    final_labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Tuple[int, int, int]],
    *,
    alpha: float = 0.5,
    min_side: int = 256,
    max_side: int = 512,
    columns: Optional[int] = None,
    point_color: Tuple[int, int, int] = (255, 230, 0),
) -> np.ndarray:
    """PointRend's subdivision of one image as panels: the coarse prediction, each step's
    prediction with a dot on each cell it re-predicted (none if it re-predicted all), the final
    prediction, and a legend (in the grid's empty slot if there is one).

    Args:
        image_rgb: (H, W, 3) uint8 RGB image (the image the model saw).
        coarse_labels: (h, w) class ids, one per ``coarse_stride`` x ``coarse_stride`` pixels.
        steps: :class:`pointrend_seg.modeling.TracedStep`-like objects: ``xy`` ((P, 2) cell
            centres ``(x, y)``), ``cell`` ((height, width)), both in image pixels, and
            ``labels`` (the class-id grid after the step).
        final_labels: (H, W) class ids of the final prediction.
        class_names, colors: name and RGB colour (0..255) of each class id.
        min_side, max_side: the shorter side at least ``min_side``, the longer at most
            ``max_side`` (which wins).
        columns: panels per row; None: 2 for 4 panels, else 3.

    Returns:
        (H', W', 3) uint8 RGB figure.
    """
    image_rgb = np.asarray(image_rgb)
    height, width = image_rgb.shape[:2]
    if np.asarray(final_labels).shape != (height, width):
        raise ValueError(f"final labels of shape {np.asarray(final_labels).shape} for an image "
                         f"of {height}x{width}")
    scale = min(max(1.0, min_side / min(height, width)), max_side / max(height, width))
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    font_px = label_font_size(out_w, out_h)
    small = cv2.resize(image_rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)

    present = set()

    def panel(labels, cell):
        """The image with ``labels`` (a grid of ``cell``-sized cells) blended in."""
        cells = resize_nearest(labels, (out_h, out_w), (cell[0] * scale, cell[1] * scale))
        vis, ids = _draw_regions(small, cells, colors, 1.0, alpha)
        present.update(ids)
        return vis.output.get_image()

    panels = [panel(np.asarray(coarse_labels), (coarse_stride, coarse_stride))]
    titles = [f"coarse (stride {coarse_stride:g})"]
    any_dots = False
    for i, step in enumerate(steps, 1):
        labels = np.asarray(step.labels)
        image = panel(labels, step.cell)
        xy = np.asarray(step.xy, dtype=np.float64).reshape(-1, 2)
        cells = labels.shape[0] * labels.shape[1]
        if len(xy) >= cells:  # every cell: dots would only hide the prediction
            titles.append(f"step {i}: all {cells} cells re-predicted")
        else:
            image[_dots(xy, step.cell, labels.shape, scale, (out_h, out_w))] = point_color
            titles.append(f"step {i}: {len(xy)} of {cells} cells (dots)")
            any_dots = True
        panels.append(image)
    panels.append(panel(np.asarray(final_labels), (1.0, 1.0)))
    titles.append("prediction")

    legend_ids = sorted(present)
    legend_names = [class_names[c] for c in legend_ids]
    legend_colors = [colors[c] for c in legend_ids]
    if any_dots:
        legend_names.append("re-predicted cells")
        legend_colors.append(point_color)
    gap = max(2, font_px // 4)
    per_row = _grid_layout(len(panels), columns)
    empty = -len(panels) % per_row
    slot_w = empty * out_w + (empty - 1) * gap
    legend_in_slot = None
    if empty:
        legend_in_slot = _legend_strip(legend_names, legend_colors, slot_w, font_px)
        if legend_in_slot.shape[0] > out_h:  # tiny panels: the legend goes under them
            legend_in_slot = None
    rows = []
    for start in range(0, len(panels), per_row):
        row_panels = panels[start:start + per_row]
        row_titles = titles[start:start + per_row]
        if len(row_panels) < per_row:  # the last row: the legend fills the empty slots
            slot = np.full((out_h, slot_w, 3), _BACKGROUND, dtype=np.uint8)
            if legend_in_slot is not None:
                slot[:legend_in_slot.shape[0]] = legend_in_slot
            row_panels = row_panels + [slot]
            row_titles = row_titles + [""]
        widths = [p.shape[1] for p in row_panels]
        rows.append(_side_by_side([_title_strip(t, w, font_px)
                                   for t, w in zip(row_titles, widths)], gap))
        rows.append(_side_by_side(row_panels, gap))
    if legend_in_slot is None:
        rows.append(_legend_strip(legend_names, legend_colors, rows[-1].shape[1], font_px))
    return np.concatenate(rows, axis=0)
