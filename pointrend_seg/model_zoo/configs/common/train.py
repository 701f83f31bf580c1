"""The ``train`` settings of our LazyConfigs (those Detectron2's tools/lazyconfig_train_net.py
reads)."""
from pointrend_seg.engine.lazy import train_settings

train = train_settings()
