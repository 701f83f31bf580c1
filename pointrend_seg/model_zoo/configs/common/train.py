"""
The ``train`` settings of our LazyConfigs: those Detectron2's tools/lazyconfig_train_net.py reads
(output_dir, init_checkpoint, max_iter, amp, ddp, checkpointer, eval_period, log_period, device;
seed -1 = a random one, as Detectron2's ``default_setup`` does with it) and what our tools read
beside them (pointrend_seg.engine.run_config): ``amp.precision`` ("float16" / "bfloat16"),
``dataset_check`` (the YAML configs' ``DATASETS.CHECK.*``, lower case) and ``inference``
(``MODEL.INFERENCE.*``, lower case), with the YAML configs' defaults.
"""
from detectron2.config import get_cfg

from pointrend_seg.config import add_pointrend_seg_config

_defaults = get_cfg()
add_pointrend_seg_config(_defaults)

train = dict(
    output_dir="./output", init_checkpoint="", max_iter=90000, seed=-1,
    amp=dict(enabled=False, precision="float16"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000), eval_period=5000, log_period=20, device="cuda",
    dataset_check={k.lower(): v for k, v in _defaults.DATASETS.CHECK.items()},
    inference={k.lower(): v for k, v in _defaults.MODEL.INFERENCE.items()},
)
