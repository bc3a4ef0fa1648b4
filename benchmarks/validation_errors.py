"""The validation error of imputing each categorical modality, from the saved model of each run, as JSON.

    python benchmarks/validation_errors.py runs/final50/*/* > runs/validation_errors.json

Training logs the same estimate each epoch (metrics.csv's `val_<modality>_error`; equal where the labelled
validation rows fit one batch of 500, otherwise drawn batch by batch differently); this scores runs made before it
did, with the model `evaluate` reads (model.ckpt, the best validation ELBO), so that settings chosen on the test
error can be checked against held-out labels of the validation split, which training never fits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from infinimodal import api
from infinimodal.evaluation.metrics import prediction_errors


def validation_errors(run: Path) -> dict:
    """{"run": run, categorical modality: its error on the validation rows where it is observed, "rows": {modality: count}}."""
    vae, config = api.load(run)
    valid = api.load_run_data(run, config, progress=False).valid
    errors = prediction_errors(
        vae.module, valid
    )  # no label modality named: the truth is each modality's observed value
    rows = {name: int(valid.mask[:, vae.module.names.index(name)].sum()) for name in errors}
    return {"run": str(run)} | {name: value["all"] for name, value in errors.items()} | {"rows": rows}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    results = [validation_errors(Path(run)) for run in argv if (Path(run) / "model.ckpt").is_file()]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
