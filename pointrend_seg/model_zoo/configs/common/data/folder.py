"""Your own folder datasets, registered as "folder_train" and "folder_val" (tools/train_net.py
--register-folder, or pointrend_seg.data.datasets.register_folder_dataset): 256x256 crops of
images rescaled to a short side of 256..448, batch 8; inference at short side 384
(folder/deeplabv3_pointrend_folder.yaml). ``dataset.num_classes`` and ``dataset.ignore_value``
(read by the mappers, the augmentations and the model) are left to the dataset: our tools take
them from "folder_train"'s metadata (its class file, --ignore-value); elsewhere set them."""
from .loader import sem_seg_dataloader

dataset = dict(num_classes=None, ignore_value=None)

dataloader = sem_seg_dataloader(
    ["folder_train"], ["folder_val"], num_classes="${dataset.num_classes}",
    ignore_label="${dataset.ignore_value}",
    min_size_train=[256, 288, 320, 352, 384, 416, 448], max_size_train=1024, min_size_test=384,
    max_size_test=1024, crop_type="absolute", crop_size=[256, 256], batch_size=8, num_workers=0,
)
