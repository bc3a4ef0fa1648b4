"""Training with Lightning, and nothing else of the package touches Lightning's training machinery:

- `train.plan`: the training plan (the objective, its warm-up, validation, clipping, divergence reports);
- `train.data`: the data module and its samplers (seeded shuffles, oversampling);
- `train.callbacks`: epoch-boundary work (reseeding, ordering dimensions, adaptive truncation, progress);
- `train.run`: `run_training`, the one place a Trainer is built (checkpoints, resume, interruption);
- `train.metrics_file`: metrics.csv across a resume.

The options it reads are `infinimodal.options.TrainingOptions`; the policy numbers of ordered and adaptive latents
are `infinimodal.truncation`; ranks and epoch seeds are `infinimodal.distributed`.
"""

from ..errors import TrainingInterrupted
from .run import TrainingResult, run_training

__all__ = ["TrainingInterrupted", "TrainingResult", "run_training"]
