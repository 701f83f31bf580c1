"""ADE20K (150 classes): 512x512 crops of images rescaled to a short side of 256..1024 with the SSD
colour augmentation, batch 16; inference at short side 512 (Base-ADE20K.yaml)."""
from .loader import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["ade20k_sem_seg_train"], ["ade20k_sem_seg_val"], num_classes=150,
    min_size_train=list(range(256, 1025, 64)), max_size_train=4096, min_size_test=512,
    max_size_test=2048, crop_type="absolute", crop_size=[512, 512], color_aug_ssd=True,
    batch_size=16,
)
