"""Pictures of segmentations (pointrend_seg/visualization.py): colours where the classes are, titles,
names on the regions when they fit, a legend when they do not, fixed size for video frames."""
import numpy as np
import pytest

from pointrend_seg.visualization import draw_sem_seg_figure, draw_subdivision_figure

GREY = 100
COLORS = [(0, 0, 0), (200, 0, 0), (0, 200, 0), (0, 0, 200)]
ALPHA = 0.5


def _halves(h, w):
    """class 1 on the left half, class 2 on the right half"""
    labels = np.ones((h, w), dtype=np.int64)
    labels[:, w // 2:] = 2
    return labels


def _blend(color):
    return np.round((1 - ALPHA) * GREY + ALPHA * np.asarray(color))


def _image(h, w):
    return np.full((h, w, 3), GREY, dtype=np.uint8)


def test_classes_are_blended_where_they_are_and_panels_are_side_by_side():
    h, w = 300, 400  # no enlargement
    pred, gt = _halves(h, w), _halves(h, w)[:, ::-1].copy()  # gt: the halves swapped
    gt[:20, :20] = 255  # ignore label: not coloured
    fig = draw_sem_seg_figure(_image(h, w), [pred, gt], ["bg", "left", "right", "unused"], COLORS,
                              alpha=ALPHA)
    assert fig.shape[0] == h and fig.shape[1] > 2 * w  # two panels and a gap, no strips
    left_panel, right_panel = fig[:, :w], fig[:, -w:]
    # well inside the regions (away from outlines and names): image and class colour blended
    for panel, (left, right) in ((left_panel, (1, 2)), (right_panel, (2, 1))):
        np.testing.assert_allclose(panel[h - 40, 40], _blend(COLORS[left]), atol=2)
        np.testing.assert_allclose(panel[h - 40, w - 40], _blend(COLORS[right]), atol=2)
    np.testing.assert_allclose(right_panel[5, 5], [GREY] * 3, atol=1)


def test_small_images_are_enlarged_and_titled():
    fig = draw_sem_seg_figure(_image(64, 96), [_halves(64, 96)], ["bg", "a", "b", "c"], COLORS,
                              titles=["prediction"], min_side=256)
    # panel 256 x 384 (4x), a title strip above it
    assert fig.shape[1] == 384 and fig.shape[0] > 256
    panel = fig[-256:]
    np.testing.assert_allclose(panel[-30, 30], _blend(COLORS[1]), atol=2)
    title = fig[:-256]
    assert (title < 128).any() and (title == 255).mean() > 0.5  # dark text on white


def _has_name_boxes(panel):
    """whether the panel has the dark pixels of a name's box (the regions are much lighter)"""
    return (panel.sum(axis=2) < 60).any()


def test_names_on_regions_when_they_fit_else_a_legend():
    names = ["bg", "left", "right", "unused"]
    big = draw_sem_seg_figure(_image(400, 600), [_halves(400, 600)], names, COLORS, alpha=ALPHA)
    assert big.shape[:2] == (400, 600)  # no legend strip
    assert _has_name_boxes(big)  # the names' dark boxes

    long_names = ["bg", "a rather long class name", "another long class name", "unused"]
    small = draw_sem_seg_figure(_image(40, 40), [_halves(40, 40)], long_names, COLORS,
                                alpha=ALPHA, min_side=128)
    panel, legend = small[:128], small[128:]
    assert legend.shape[0] > 0 and legend.shape[1] == 128
    assert not _has_name_boxes(panel)  # no names on the regions
    # the legend has the swatches of the classes present, and no other class colour
    present = {tuple(c) for c in legend.reshape(-1, 3)}
    assert tuple(COLORS[1]) in present and tuple(COLORS[2]) in present
    assert tuple(COLORS[3]) not in present


def test_legend_inside_keeps_the_frame_size():
    long_names = ["bg", "a rather long class name", "another long class name", "unused"]
    frame = draw_sem_seg_figure(_image(90, 160), [_halves(90, 160)], long_names, COLORS,
                                min_side=0, legend_inside=True)
    assert frame.shape == (90, 160, 3)
    assert (frame[:12, :12].sum(axis=2) < 150).any()  # the legend's dark box, top left


def test_bad_arguments():
    with pytest.raises(ValueError, match="label map of shape"):
        draw_sem_seg_figure(_image(10, 10), [np.zeros((10, 11), np.int64)], ["a", "b"],
                            COLORS[:2])
    with pytest.raises(ValueError, match="2 class names but 4 colours"):
        draw_sem_seg_figure(_image(10, 10), [np.zeros((10, 10), np.int64)], ["a", "b"], COLORS)
    with pytest.raises(ValueError, match="1 titles for 2 panels"):
        draw_sem_seg_figure(_image(10, 10), [np.zeros((10, 10), np.int64)] * 2, ["a", "b"],
                            COLORS[:2], titles=["x"])


class _Step:
    def __init__(self, xy, cell, labels):
        self.xy, self.cell, self.labels = np.asarray(xy, float), cell, np.asarray(labels)


def test_subdivision_figure_marks_exactly_the_repredicted_cells():
    """A 16x16 image drawn at scale 1: the step panel has a 2x2 dot in the point colour at the
    centre of exactly the three re-predicted 4x4 cells (12 pixels; the rest of each cell shows
    the prediction), and no other panel has it."""
    point = (255, 230, 0)
    image = _image(16, 16)
    coarse = np.array([[1, 2], [2, 1]])  # stride 8
    step_labels = np.kron(coarse, np.ones((2, 2), int))  # 4x4 cells of 4x4 px
    # centres of cells (row 0, col 1), (row 2, col 3), (row 3, col 0), in pixels (x, y)
    xy = [(6.0, 2.0), (14.0, 10.0), (2.0, 14.0)]
    final = np.kron(coarse, np.ones((8, 8), int))
    figure = draw_subdivision_figure(image, coarse, 8, [_Step(xy, (4.0, 4.0), step_labels)],
                                     final, ["a", "b", "c", "d"], COLORS, min_side=16,
                                     max_side=16, point_color=point)
    is_point = (figure == point).all(axis=2)
    font_px, gap = 12, 3  # label_font_size(16, 16); max(2, 12 // 4)
    title_h = round(1.8 * font_px)
    panels = [figure[title_h:title_h + 16, x:x + 16] for x in (0, 16 + gap, 2 * (16 + gap))]
    step_points = (panels[1] == point).all(axis=2)
    expected = np.zeros((16, 16), bool)
    for r, c in [(0, 1), (2, 3), (3, 0)]:
        expected[4 * r + 1:4 * r + 3, 4 * c + 1:4 * c + 3] = True
    assert (step_points == expected).all()
    # around the dots the step's prediction shows (class 2 in cell (0, 1))
    np.testing.assert_allclose(panels[1][3, 4], _blend(COLORS[1]), atol=1)
    # elsewhere only in the legend's swatch (under the panels)
    assert not is_point[:title_h + 16 + 1].sum() - expected.sum()
    # the coarse panel shows the 2x2 prediction (class 1 top-left), the final one too
    for p in (panels[0], panels[2]):
        np.testing.assert_allclose(p[4, 4], _blend(COLORS[1]), atol=1)
        np.testing.assert_allclose(p[4, 12], _blend(COLORS[2]), atol=1)


def test_subdivision_figure_all_cells_and_no_empty_slot():
    """A step that re-predicted every cell has no dots (its title says so), and with five
    panels in rows of three the legend fills the empty slot instead of a strip under them
    (panels of 256 px, as the demo draws them)."""
    point = (255, 230, 0)
    coarse = np.array([[1, 2], [2, 1]])
    every_cell = [(x + 2.0, y + 2.0) for y in range(0, 16, 4) for x in range(0, 16, 4)]
    some = [(6.0, 2.0)]
    grid = np.kron(coarse, np.ones((2, 2), int))
    steps = [_Step(every_cell, (4.0, 4.0), grid), _Step(some, (4.0, 4.0), grid),
             _Step(some, (4.0, 4.0), grid)]
    figure = draw_subdivision_figure(_image(16, 16), coarse, 8, steps,
                                     np.kron(coarse, np.ones((8, 8), int)), ["a", "b", "c", "d"],
                                     COLORS, min_side=256, max_side=256, point_color=point)
    side, title_h, gap = 256, round(1.8 * 12), 3  # label_font_size(256, 256) = 12
    # two rows of (title, panel), nothing under them
    assert figure.shape[0] == 2 * (title_h + side)
    first_step = figure[title_h:title_h + side, side + gap:2 * side + gap]
    assert not (first_step == point).all(axis=2).any()
    assert (figure[title_h:title_h + side, 2 * (side + gap):] == point).all(axis=2).any()
    # the legend (with the dots' swatch) is in the last row's empty slot
    slot = figure[2 * title_h + side:, 2 * (side + gap):]
    assert (slot == point).all(axis=2).any() and (slot < 100).any()  # swatch and text


def test_photo_panel_and_legend_colours_kept():
    """photo=True: the image first, then the classes in exactly their colours (alpha 1)."""
    h, w = 300, 400
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    fig = draw_sem_seg_figure(image, [_halves(h, w)], ["bg", "left", "right", "unused"], COLORS,
                              photo=True, alpha=1.0)
    assert fig.shape[0] == h and fig.shape[1] > 2 * w
    np.testing.assert_array_equal(fig[:, :w], image)
    labels = fig[:, -w:]
    np.testing.assert_array_equal(labels[h - 40, 40], COLORS[1])
    np.testing.assert_array_equal(labels[h - 40, w - 40], COLORS[2])


def test_subdivision_figure_fits_large_images_in_max_side():
    image = _image(1024, 2048)
    coarse = np.ones((128, 256), int)
    figure = draw_subdivision_figure(image, coarse, 8, [], np.ones((1024, 2048), int),
                                     ["a", "b", "c", "d"], COLORS, max_side=512)
    # panels of 256x512 (scale 0.25), coarse and final side by side 3 px apart
    assert figure.shape[1] == 2 * 512 + 3 and 256 < figure.shape[0] < 2 * 256


def test_very_elongated_images_keep_their_classes_when_reduced():
    """A label map reduced with its image has the image's size: a 1x2000 map with max_side 512
    became 0x512 and its classes were silently left out (of the panel and the legend)."""
    for shape, panel in (((2000, 1), (512, 1)), ((1, 2000), (1, 512))):
        fig = draw_sem_seg_figure(_image(*shape), [np.ones(shape, dtype=np.int64)],
                                  ["bg", "a", "b", "c"], COLORS, min_side=0, max_side=512)
        assert fig.shape[1] == panel[1] and fig.shape[0] > panel[0]  # a legend under the panel
    assert (fig[1:] == COLORS[1]).all(axis=2).any()  # in it, class "a"'s swatch
