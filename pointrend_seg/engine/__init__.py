from .trainer import Trainer, build_config
