"""CamVid (SegNet layout, 11 classes, void 11 ignored): 352x480 crops of images rescaled to a short
side of 288..576, batch 8; inference at the native 360x480 (Base-CamVid.yaml)."""
from .loader import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["camvid_sem_seg_train"], ["camvid_sem_seg_val"], num_classes=11, ignore_label=11,
    min_size_train=list(range(288, 577, 36)), max_size_train=1024, min_size_test=0,
    max_size_test=1333, crop_type="absolute", crop_size=[352, 480], batch_size=8,
)
