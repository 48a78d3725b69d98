"""Training: one loop for a laptop CPU and a GPU cluster (single process or torchrun/DDP).

``arkpose train --preset quick`` (or ``python -m arkpose.train``, or
``torchrun --nproc_per_node=N -m arkpose.train``, same arguments) trains a pose model and
leaves a run directory::

    config.yaml    the full config of the run
    metrics.jsonl  one line per epoch: loss parts and curve, lr, images/s, data wait, validation
    last.pt        the latest state (epoch boundary, or mid-epoch after Ctrl-C / SIGTERM)
    best.pt        the state with the best validation (final-quality AP; val loss before
                   the evaluator exists)
    train.log      what the progress bar and the log said

Resuming (``--resume``) restores weights, optimiser, scheduler, all random generator states
and the position inside the epoch, so an interrupted CPU run ends with the same numbers, bit
for bit, as one that never stopped. That rests on two facts: the sampler's order and the
augmentation are functions of (seed, epoch, index) (``DistributedSampler.set_epoch`` and
``dataset.set_epoch``), and nothing in the loop draws from a generator that is not saved.

The package, one job a module:

- :mod:`~arkpose.train.loop`: :func:`train` and the loop's steps (build, resume, one epoch,
  end of epoch);
- :mod:`~arkpose.train.step`: one optimisation step, the lr schedule, mixed precision;
- :mod:`~arkpose.train.loader`: the data check and the resumable per-rank batches;
- :mod:`~arkpose.train.state`: what a checkpoint holds (built and restored there);
- :mod:`~arkpose.train.distributed`: torchrun's environment and the loop's collectives;
- :mod:`~arkpose.train.signals`: Ctrl-C / SIGTERM and the exit statuses;
- :mod:`~arkpose.train.rundir`: the run folder (file names, logging, metrics.jsonl,
  config.yaml);
- :mod:`~arkpose.train.validation`: validation during training;
- :mod:`~arkpose.train.cli`: the command line (``__main__`` runs it).

The public names are re-exported here: use ``from arkpose import train`` and ``train.NAME``
(private helpers stay in their modules).
The loop looks :func:`train_step` and :func:`validate` up on this package when it calls
them, and :func:`main` looks up :func:`train` here, so patching ``train.NAME`` takes effect.
"""

from arkpose.train.cli import build_parser, config_from_args, main
from arkpose.train.distributed import DistEnv, setup_distributed
from arkpose.train.loader import DataMissingError, ResumableSampler, TrainLoader, check_data
from arkpose.train.loop import LOG, train
from arkpose.train.rundir import BEST, CONFIG_FILE, LAST, LOG_FILE, METRICS, read_metrics
from arkpose.train.signals import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    TrainingInterrupted,
)
from arkpose.train.state import OPTIONAL_KEYS, STATE_KEYS
from arkpose.train.step import OutOfMemory, lr_milestones, make_scheduler, train_step
from arkpose.train.validation import validate

__all__ = [
    "BEST", "CONFIG_FILE", "EXIT_BAD_INPUT", "EXIT_ERROR", "EXIT_SIGINT", "EXIT_SIGTERM",
    "LAST", "LOG", "LOG_FILE", "METRICS", "OPTIONAL_KEYS", "STATE_KEYS", "DataMissingError",
    "DistEnv", "OutOfMemory", "ResumableSampler", "TrainLoader", "TrainingInterrupted",
    "build_parser", "check_data", "config_from_args", "lr_milestones", "main",
    "make_scheduler", "read_metrics", "setup_distributed", "train", "train_step", "validate",
]
