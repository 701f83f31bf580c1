"""
A resumable, reproducible training data stream (docs/checkpoints.md, "Resuming"): everything the
data depends on is a function of ``(seed, position)``, where Detectron2's ``TrainingSampler``
restarts from the seed on resume and augments with RNGs no checkpoint holds.

* The stream is ``perm_0 + perm_1 + ...``, ``perm_e`` a permutation of the dataset seeded by
  ``(seed, e)``. Iteration ``i`` takes positions ``[i * B, (i + 1) * B)`` (``B`` =
  ``SOLVER.IMS_PER_BATCH``), rank ``r`` the block ``[i * B + r * b, i * B + (r + 1) * b)`` with
  ``b = B / world_size``.
* The sample at position ``p`` is mapped (augmented) with Python's, NumPy's and torch's CPU RNGs
  seeded from ``(seed, p)``, the caller's RNG states restored after: it does not depend on the
  loader's history, ``DATALOADER.NUM_WORKERS``, the rank or the world size.

With ``skip_bad`` (``DATASETS.CHECK.SKIP_BAD``) a sample that fails to load (``BadInputError``) is
logged and replaced by the next dataset index that loads. There is no aspect-ratio grouping: it
would make a batch depend on what earlier batches left in the buckets.
"""
import contextlib
import functools
import itertools
import logging
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from ..config import ConfigError
from ..data.readers import BadInputError
from .data_checks import without_images

__all__ = ["ResumableTrainLoader", "ResumableTrainingSampler", "build_resumable_train_loader",
           "derive_seed", "seed_all", "seeded_rngs", "step_seed"]

logger = logging.getLogger(__name__)

# Namespaces of the derived seeds, so that e.g. epoch 3 and position 3 get unrelated seeds.
_EPOCH, _SAMPLE, _WORKER, _STEP = 1, 2, 3, 4


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a deterministic function of the integer ``keys``."""
    words = np.random.SeedSequence([int(k) % (1 << 63) for k in keys]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def step_seed(run_seed: int, iteration: int, rank: int) -> int:
    """The seed of the model's random parts (dropout, PointRend's random points) at
    ``iteration`` on process ``rank``: a function of the run's seed, not of what ran before."""
    return derive_seed(run_seed, _STEP, iteration, rank)


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy (``seed mod 2**32``) and torch (CPU and CUDA) with ``seed``:
    Detectron2's ``seed_all_rng`` gives NumPy only 32 bits and sets ``PYTHONHASHSEED`` each call."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Seed Python's ``random``, NumPy's global RNG and torch's CPU generator with ``seed`` for
    the block, then restore their states."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    # the CPU generator only: the CUDA generators' state is not restored afterwards
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


class ResumableTrainingSampler(Sampler):
    """The infinite training stream of one process as ``(position, dataset_index)`` pairs (module
    docstring), from iteration :attr:`start_iter`."""

    def __init__(self, size: int, *, total_batch_size: int, seed: int, rank: int = None,
                 world_size: int = None, start_iter: int = 0):
        if size <= 0:
            raise ValueError(f"the training set is empty (size {size})")
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if total_batch_size <= 0 or total_batch_size % self.world_size != 0:
            raise ConfigError(
                f"SOLVER.IMS_PER_BATCH={total_batch_size} must be a positive multiple of the "
                f"number of processes ({self.world_size})")
        self.size = int(size)
        self.total_batch_size = int(total_batch_size)
        self.batch_size = self.total_batch_size // self.world_size
        self.seed = int(seed)
        self.start_iter = int(start_iter)
        self._perm_epoch, self._perm = None, None

    def positions(self, iteration: int) -> range:
        """Global stream positions of this process's batch at ``iteration``."""
        start = iteration * self.total_batch_size + self.rank * self.batch_size
        return range(start, start + self.batch_size)

    def index(self, position: int) -> int:
        """Dataset index at a global stream position."""
        epoch, offset = divmod(position, self.size)
        if epoch != self._perm_epoch:
            g = torch.Generator()
            g.manual_seed(derive_seed(self.seed, _EPOCH, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g).tolist(), epoch
        return self._perm[offset]

    def __iter__(self):
        for iteration in itertools.count(self.start_iter):
            for p in self.positions(iteration):
                yield p, self.index(p)

    def state_dict(self):
        return {"seed": self.seed, "size": self.size, "total_batch_size": self.total_batch_size}


class _BatchStream(IterableDataset):
    """Yields this process's batches (lists of mapped dicts); loader workers share iterations."""

    def __init__(self, dataset, mapper, sampler: ResumableTrainingSampler, skip_bad=False):
        self.dataset = dataset
        self.mapper = mapper
        self.sampler = sampler
        self.skip_bad = skip_bad

    def map_position(self, position: int):
        index = self.sampler.index(position)
        for offset in range(len(self.dataset)):
            candidate = (index + offset) % len(self.dataset)
            try:
                with seeded_rngs(derive_seed(self.sampler.seed, _SAMPLE, position)):
                    return self.mapper(self.dataset[candidate])
            except BadInputError as e:
                if not self.skip_bad:
                    raise
                logger.warning(
                    f"Skipping training sample {self.dataset[candidate]['file_name']} (dataset "
                    f"index {candidate}) at stream position {position}: {e}")
        raise BadInputError(f"none of the {len(self.dataset)} training samples can be loaded",
                            "no usable sample")

    def __iter__(self):
        info = get_worker_info()
        worker_id, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader polls its workers round-robin, so worker w serves iterations
        # start + w, start + w + num_workers, ... and batches come out in iteration order.
        for iteration in itertools.count(self.sampler.start_iter + worker_id, num_workers):
            yield [self.map_position(p) for p in self.sampler.positions(iteration)]


def _seed_worker(seed: int, rank: int, worker_id: int) -> None:
    seed_all(derive_seed(seed, _WORKER, rank, worker_id))


class ResumableTrainLoader:
    """The training loader: an iterable of per-process batches (lists of dicts). Lazy: nothing is
    loaded before the first ``next``, so :meth:`set_start_iter` can still move the start."""

    def __init__(self, dataset, mapper, sampler: ResumableTrainingSampler, num_workers: int = 0,
                 skip_bad: bool = False):
        self.sampler = sampler
        self.num_workers = num_workers
        self._stream = _BatchStream(dataset, mapper, sampler, skip_bad=skip_bad)

    def set_start_iter(self, start_iter: int):
        """Start the next ``iter()`` at this training iteration."""
        self.sampler.start_iter = int(start_iter)

    def __iter__(self):
        if self.num_workers == 0:
            yield from self._stream
            return
        # A generator of its own: the DataLoader draws its workers' base seed from it instead of
        # from torch's global RNG, whose state belongs to the model (see ExactResume.reseed).
        generator = torch.Generator()
        generator.manual_seed(derive_seed(self.sampler.seed, _WORKER, self.sampler.rank))
        loader = DataLoader(
            self._stream, batch_size=None, num_workers=self.num_workers,
            collate_fn=trivial_batch_collator, generator=generator,
            worker_init_fn=functools.partial(_seed_worker, self.sampler.seed, self.sampler.rank))
        yield from loader

    def state_dict(self):
        """What a resumed run needs besides the iteration: the stream's seed and shape."""
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        """Continue the stream of a checkpoint (its seed); warn if its shape changed."""
        if state.get("seed") is not None and int(state["seed"]) != self.sampler.seed:
            logger.info(
                f"Resuming the training data stream of the checkpoint (seed {state['seed']}; "
                f"this run was set up with {self.sampler.seed})")
            self.sampler.seed = int(state["seed"])
            self.sampler._perm_epoch = None
        for key in ("size", "total_batch_size"):
            if key in state and state[key] != getattr(self.sampler, key):
                logger.warning(
                    f"The checkpoint's training stream had {key}={state[key]}, this run has "
                    f"{getattr(self.sampler, key)}: the data after resuming will not be the data "
                    "the interrupted run would have seen")


def build_resumable_train_loader(cfg, mapper, *, seed: int, skip_images=()):
    """The :class:`ResumableTrainLoader` of ``cfg.DATASETS.TRAIN`` with ``mapper`` (batch
    ``SOLVER.IMS_PER_BATCH`` over all processes, ``DATALOADER.NUM_WORKERS`` workers each), without
    the samples whose ``file_name`` is in ``skip_images``."""
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ConfigError(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r}: pointrend_seg trains "
            "with its resumable equivalent of 'TrainingSampler' only")
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    if skip_images:
        dicts = without_images(dicts, skip_images)
    if cfg.SOLVER.IMS_PER_BATCH > len(dicts):
        logger.warning(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is larger than the {len(dicts)} "
            f"training samples of {tuple(cfg.DATASETS.TRAIN)}: every batch holds some of them "
            "twice or more (an epoch is shorter than one iteration)")
    sampler = ResumableTrainingSampler(len(dicts), total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                       seed=seed)
    dataset = DatasetFromList(dicts, copy=False)  # mappers deep-copy their input
    return ResumableTrainLoader(dataset, mapper, sampler, num_workers=cfg.DATALOADER.NUM_WORKERS,
                                skip_bad=cfg.DATASETS.CHECK.SKIP_BAD)
