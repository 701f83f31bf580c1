"""
Your own folder datasets ("folder_train", "folder_val") with the CPU demo's model: the twin of
folder/deeplabv3_pointrend_folder.yaml. Set the number of classes of the model and of the two
mappers (which check the label values) on the command line:

    python tools/train_net.py --config-file configs/folder/deeplabv3_pointrend_folder.py \\
        --register-folder folder_train ... --register-folder folder_val ... \\
        model.sem_seg_head.coarse_head.num_classes=3 dataloader.train.mapper.num_classes=3 \\
        dataloader.test.mapper.num_classes=3 train.output_dir=output/my_data
"""
from pointrend_seg.engine.lazy import poly_lr_multiplier

from ..common.data.folder import dataloader
from ..demo.deeplabv3_pointrend_synthetic import model, optimizer, train

model.sem_seg_head.coarse_head.num_classes = 2  # the point head's follow
train.update(output_dir="output/folder", max_iter=4000, eval_period=1000,
             checkpointer=dict(period=1000, max_to_keep=100))
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=50)
