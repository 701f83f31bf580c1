"""The built-in synthetic shapes (128x128 images, 5 classes): the CPU demo's data, as the YAML
demo configures it (INPUT.* of demo/deeplabv3_pointrend_synthetic.yaml)."""
from .loader import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["synthetic_shapes_sem_seg_train"], ["synthetic_shapes_sem_seg_val"], num_classes=5,
    min_size_train=[128], max_size_train=128, min_size_test=128, max_size_test=128,
    batch_size=8, num_workers=0,  # one process: a loader worker would compete for 2 cores
)
