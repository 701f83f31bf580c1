from .checkpoint import SafeCheckpointer, UnsafeCheckpointError, atomic_write
from .config_checks import check_dataset_config
from .train_data import ResumableTrainLoader, ResumableTrainingSampler
from .trainer import NonFiniteLossError, Trainer, adapt_norm_to_world_size
