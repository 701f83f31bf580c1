"""
Your own folder datasets ("folder_train", "folder_val") with the CPU demo's model: the twin of
folder/deeplabv3_pointrend_folder.yaml. The number of classes and the ignore value come from the
registered dataset (``dataset.num_classes`` / ``dataset.ignore_value``, common/data/folder.py):

    python tools/train_net.py --config-file configs/folder/deeplabv3_pointrend_folder.py \\
        --register-folder folder_train IMAGES MASKS classes.txt --ignore-value 11 \\
        --register-folder folder_val IMAGES MASKS classes.txt --ignore-value 11 \\
        train.output_dir=output/my_data
"""
from ..common.data.folder import dataloader, dataset
from ..common.optim import poly_lr_multiplier
from ..demo.deeplabv3_pointrend_synthetic import model, optimizer, train

model.sem_seg_head.coarse_head.num_classes = "${dataset.num_classes}"  # the point head's follow
model.sem_seg_head.ignore_value = "${dataset.ignore_value}"
train.update(output_dir="output/folder", max_iter=4000, eval_period=1000,
             checkpointer=dict(period=1000))
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=50)
