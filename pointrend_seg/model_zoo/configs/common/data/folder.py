"""Your own folder datasets, registered as "folder_train" and "folder_val" (tools/train_net.py
--register-folder, or pointrend_seg.data.datasets.register_folder_dataset): 256x256 crops of
images rescaled to a short side of 256..448, batch 8; inference at short side 384
(folder/deeplabv3_pointrend_folder.yaml). Set the classes: dataloader.*.mapper.num_classes and
the model's."""
from pointrend_seg.engine.lazy import sem_seg_dataloader

dataloader = sem_seg_dataloader(
    ["folder_train"], ["folder_val"], num_classes=2,
    min_size_train=[256, 288, 320, 352, 384, 416, 448], max_size_train=1024, min_size_test=384,
    max_size_test=1024, crop_type="absolute", crop_size=[256, 256], batch_size=8, num_workers=0,
)
