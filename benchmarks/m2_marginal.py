"""M2's own use of unlabelled rows, measured against `--infomax` (docs/results.md section 9); prints JSON.

    python benchmarks/m2_marginal.py --data mnist:labels=0.01 --epochs 10 --out runs/m2/labels0.01

Kingma et al. 2014's M2 model scores a row without its label by the bound

    log p(x) >= sum_y q(y | x) ELBO(x, y) + H(q(y | x)),

the label summed out under the classifier q(y | x). Here q(y | x) is what imputation reads, p(label | z) with
z ~ q(z | the row's observed modalities), and ELBO(x, y) is the aggregator's ELBO of the row with its label set to
y. This script trains the default gated MoPoE model with that bound in place of the unlabelled rows' own ELBO (plus
the prediction term on the labelled rows, as the section's other runs) and evaluates it like them. It is an
experiment kept reproducible, not an option of the library: it predicted worse than no term at all (section 9),
at C + 1 ELBOs per unlabelled row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infinimodal import api  # noqa: E402
from infinimodal.model import MultimodalModule  # noqa: E402
from infinimodal.semisupervised import class_entropy, select_rows, unlabelled_rows  # noqa: E402


def marginal_gain(module: MultimodalModule, data: dict, mask, kl_weight: float, name: str):
    """sum over the rows missing `name` of [sum_y q(y | x) ELBO(x, y) + H(q(y | x)) - ELBO(x)] / batch: added to the
    objective, it puts M2's bound in place of those rows' own ELBO (in expectation over the draws)."""
    c = module.names.index(name)
    rows = unlabelled_rows(mask, c)
    if not len(rows):
        return torch.zeros((), device=mask.device)
    given = mask.index_select(0, rows)
    chosen = select_rows(data, rows)
    z = module.latent.rsample(module.posterior(chosen, given))
    log_q = torch.log_softmax(module.class_logits(name, z), dim=-1)  # [R, C]
    n_classes, n_rows = log_q.shape[1], len(rows)
    repeated = {k: v.repeat(n_classes, *([1] * (v.dim() - 1))) for k, v in chosen.items()}
    repeated[name] = torch.eye(n_classes, device=mask.device).repeat_interleave(n_rows, 0)  # class y for block y
    labelled = given.repeat(n_classes, 1)
    labelled[:, c] = True
    with_label = module.aggregator.loss(module, repeated, labelled, kl_weight)
    objective = (with_label.reconstruction - kl_weight * with_label.kl).view(n_classes, n_rows)
    own = module.aggregator.loss(module, chosen, given, kl_weight)
    bound = (log_q.exp().T * objective).sum(0) + class_entropy(log_q)
    return (bound - (own.reconstruction - kl_weight * own.kl)).sum() / mask.shape[0]


@contextlib.contextmanager
def m2_objective(name: str):
    """Training steps of every MultimodalModule use M2's bound for the rows missing `name` while inside."""
    forward = MultimodalModule.forward

    def patched(self, data, mask, kl_weight=1.0, weights=None):
        out = forward(self, data, mask, kl_weight, weights)
        if self.training:
            out.loss = out.loss - marginal_gain(self, data, mask, kl_weight, name)
        return out

    MultimodalModule.forward = patched
    try:
        yield
    finally:
        MultimodalModule.forward = forward


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist:labels=0.01")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--predict", type=float, default=100.0, help="alpha of the label's prediction term")
    parser.add_argument("--iw-samples", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = api.TrainConfig(
        data=args.data,
        epochs=args.epochs,
        seed=args.seed,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        kl_warmup=min(5.0, args.epochs / 2),
        predict={"label": args.predict},
    )
    with m2_objective("label"):
        api.train(config, args.out, progress=False)
    result = api.evaluate(args.out, iw_samples=args.iw_samples, coherence=False, progress=False)
    record = json.loads((Path(args.out) / "config.json").read_text())
    summary = {
        "run": args.out,
        "data": args.data,
        "epochs": args.epochs,
        "seed": args.seed,
        "objective": "m2 marginal",
        "train_seconds": record["train_seconds"],
        "label_error": result["prediction_error"]["label"]["all"],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
