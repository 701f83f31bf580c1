"""Cityscapes fine (19 classes, Detectron2's registration): 512x1024 crops of images rescaled to a
short side of 512..2048, batch 16; inference at short side 1024 (Base-Cityscapes.yaml)."""
from .loader import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["cityscapes_fine_sem_seg_train"], ["cityscapes_fine_sem_seg_val"], num_classes=19,
    min_size_train=[512, 768, 1024, 1280, 1536, 1792, 2048], max_size_train=4096,
    min_size_test=1024, max_size_test=2048, crop_type="absolute", crop_size=[512, 1024],
    batch_size=16,
)
