"""Drawing predictions with Detectron2's ``Visualizer``."""
import numpy as np

from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_sem_seg_overlay"]


def draw_sem_seg_overlay(image_rgb, labels, metadata, gt_labels=None, alpha=0.6):
    """
    Args:
        image_rgb (ndarray): (H, W, 3) uint8 RGB image.
        labels (ndarray or Tensor): (H, W) predicted class ids.
        metadata: Detectron2 ``Metadata`` with ``stuff_classes`` / ``stuff_colors``.
        gt_labels (ndarray, optional): (H, W) ground truth; if given it is drawn on a second
            copy of the image, to the right of the prediction.

    Returns:
        ndarray: (H, W, 3) or (H, 2W, 3) uint8 RGB.
    """
    panels = []
    for lab in [labels] if gt_labels is None else [labels, gt_labels]:
        vis = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
        panels.append(vis.draw_sem_seg(np.asarray(lab), alpha=alpha).get_image())
    return np.concatenate(panels, axis=1)
