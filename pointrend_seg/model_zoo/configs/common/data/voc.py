"""PASCAL VOC 2012 (21 classes): train_aug -> val, 512x512 crops of images rescaled to a short side
of 256..1024, batch 16; inference at the native size (Base-VOC.yaml)."""
from .loader import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["voc_2012_sem_seg_train_aug"], ["voc_2012_sem_seg_val"], num_classes=21,
    min_size_train=list(range(256, 1025, 64)), max_size_train=4096, min_size_test=0,
    max_size_test=1333, crop_type="absolute", crop_size=[512, 512], batch_size=16,
)
