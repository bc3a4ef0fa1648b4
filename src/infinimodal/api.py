"""The user-facing facade: `MultimodalVAE` (fit / embed / impute / sample / evaluate / save / load) and the
run-directory functions the command line uses (`train`, `resume_config`, `load`, `evaluate`). The configuration
is `infinimodal.config`, the run directory's files `infinimodal.runfiles`, Lightning `infinimodal.train`.

A run directory holds `config.json` (the `TrainConfig`, the modalities and the run `format`), `model.ckpt` (the
best checkpoint by validation ELBO), `last.ckpt` (the last finished epoch, for --resume), `progress.json`,
`metrics.csv` (per-epoch curves) and, after evaluation, `eval.json`.

    from infinimodal import MultimodalVAE, Modality
    vae = MultimodalVAE([Modality("mri", (90,)), Modality("pet", (90,))], latent="gated", aggregator="mopoe")
    vae.fit(data, epochs=50)
    z = vae.embed(arrays)               # posterior means, rows with missing modalities included
    filled = vae.impute(arrays)         # the NaN rows of each modality filled in
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeAlias

import numpy as np
import torch

from .config import (  # noqa: F401  (re-exported: the configuration is part of the facade)
    DEFAULT_AGGREGATOR,
    DEFAULT_LATENT,
    DataOptions,
    ModelConfig,
    TrainConfig,
    _check,
    build_module,
    component_settings,
    named_component_settings,
)
from .options import ACCELERATORS, DEFAULT_GRAD_CLIP, PRECISIONS, TrainingOptions  # noqa: F401  (re-exported likewise)
from .data import MultimodalData, Split
from .data.files import check_rows, codes_to_positions, one_hot, user_arrays
from .columns import COVARIATES
from .data.covariates import CovariateEncoding
from .data.tables import holds_frames, table_rows, user_tables
from .data.standardize import forward as standardize_values
from .data.standardize import inverse as unstandardize_values
from .errors import DataError, InfinimodalError, format_rows
from .evaluation import encode, evaluate_model, load_classifiers
from .model import imputation_draws
from .evaluation.explain import MAX_ROWS as EXPLAIN_ROWS, explanation_variables, feature_names
from .evaluation.explain import explain as explain_dimensions
from .deviation import Reference, deviation_scores, empty_cells
from .modality import Modality
from .synthesis import DEFAULT_SOURCE, SOURCES, synthesis_report, synthesize
from .runfiles import (
    RUN_FORMAT,
    atomic_write,
    clear_run_files,
    load_weights,
    read_config,
    read_progress,
    read_standardization,
    unfinished_warning,
    write_json,
)
from .runlog import log_to  # (also re-exported for the command line)
from .rundata import data_file_record, file_sha256, load_data, load_run_data, run_data_file  # noqa: F401  (re-exported)
from .distributed import is_rank_zero
from .train import run_training

if TYPE_CHECKING:  # pragma: no cover
    from lightning.pytorch.callbacks import Callback

log = logging.getLogger("infinimodal")

#: Rows a user passes: arrays keyed by modality (rows of NaN = missing), pandas DataFrames keyed by subject ID (a model
#: of tables), AnnData objects, a MuData, an .npz / .h5mu path, or a `Split` (`MultimodalVAE.as_split` reads them).
UserRows: TypeAlias = Any


class MultimodalVAE:
    """A multimodal VAE over any latent family and aggregator: the Python facade.

    Args:
        modalities: the `Modality` specs; their order is the model's modality order.
        latent: the latent family (`infinimodal.latents.LATENT_FAMILIES`): `gated` (the default: the stick-gated
            Gaussian, ordered and sizing itself), `gaussian`, `beta`, `kumaraswamy` or `logitnormal`.
        aggregator: how modalities are fused: `poe`, `moe` or `mopoe` (the default).
        seed: the seed of the initial weights (the caller's random state is left as it was).
        covariates: the encoding of the covariates every encoder and decoder reads (a conditional VAE;
            `infinimodal.data.covariates`), or None.
        **settings: any other `ModelConfig` field: `latent_dim` (the bound of a self-sizing latent, or D), `truncation`,
            `alpha`, `hidden`, and each family's and aggregator's options (`infinimodal train --help` lists them).
    """

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent: str = DEFAULT_LATENT,
        aggregator: str = DEFAULT_AGGREGATOR,
        seed: int = 0,
        covariates: CovariateEncoding | None = None,
        **settings: Any,
    ) -> None:
        self.config = ModelConfig(latent=latent, aggregator=aggregator, **settings)
        self.config.validate()
        self.modalities = list(modalities)
        #: the covariates every encoder and decoder reads (a conditional VAE; `infinimodal.data.covariates`), or None
        self.covariates = covariates
        with torch.random.fork_rng():  # the initial weights depend on `seed` only, not on the caller's RNG state
            torch.manual_seed(seed)
            self.module = build_module(
                self.modalities, self.config, covariates=covariates.width if covariates is not None else 0
            )
        self.module.eval()
        #: {modality: {"mean", "std"}} of standardised modalities: inputs are mapped in, outputs back out
        self.standardization: dict = {}

    @property
    def names(self) -> list[str]:
        """The modalities' names, in the model's order."""
        return [m.name for m in self.modalities]

    # --- training --------------------------------------------------------------------------------------

    def check_training_options(self, data: MultimodalData, options: TrainingOptions) -> None:
        """Refuse, with the flag's name, training options that do not fit this model and these data (see `fit`);
        `train` asks before it clears an old run from the run directory, so a mistake loses nothing.

        Args:
            data: the data the model is to be trained on.
            options: the training options, as `fit` reads them.

        Raises:
            InfinimodalError: naming the option and the modalities it does not fit.
        """
        options.validate()
        for flag, values in (
            ("--weight", options.weights),
            ("--predict", options.predict),
            ("--infomax", options.infomax),
            ("--vat", options.vat),
            ("--oversample", options.oversample),
        ):
            unknown = set(values) - set(self.names)
            if unknown:
                raise InfinimodalError(
                    f"{flag} given for {', '.join(sorted(unknown))}, which are not modalities of this model ({', '.join(self.names)})"
                )
        for flag, values in (("--infomax", options.infomax), ("--vat", options.vat)):
            not_classes = [m.name for m in self.modalities if m.name in values and not m.categorical]
            if not_classes:
                raise InfinimodalError(
                    f"{flag} is for categorical modalities (a class per row); {', '.join(not_classes)} is not categorical"
                )
        categorical = {m.name for m in self.modalities if m.categorical}
        _check(
            not options.vat or len(categorical) < len(self.modalities),
            f"--vat perturbs the modalities beside {', '.join(sorted(options.vat))}, "
            "and every one of them is categorical: there is nothing to perturb",
        )
        observed = {m.name: bool(data.train.mask[:, i].any()) for i, m in enumerate(data.modalities)}
        unseen = [name for name in options.oversample if not observed.get(name, True)]
        _check(not unseen, f"--oversample {', '.join(unseen)}: no training row has it observed")

    def fit(
        self,
        data: MultimodalData,
        out_dir: str | Path | None = None,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        **options: Any,
    ) -> "MultimodalVAE":
        """Train with Lightning and keep the weights of the best validation ELBO.

        Runs are deterministic on the CPU; on accelerators, operations without a deterministic kernel warn instead of
        stopping the run. `devices` > 1 trains with Lightning's DDP; `batch_size` is the batch of all processes
        together, so results match one process with that batch. The training objective's weights and terms belong to
        training: the ELBO that validation and evaluation report is never weighted.

        Args:
            data: the modalities and splits to train on (`infinimodal.data.load_dataset`); validation rows choose the
                kept weights.
            out_dir: where model.ckpt, last.ckpt, metrics.csv and the log are written (a temporary folder when None).
            progress: whether Lightning shows progress bars.
            callbacks: extra Lightning callbacks (their `pl_module.model` is this model's module).
            resume: continue `out_dir`'s run from its last.ckpt (`infinimodal.train`).
            **options: any field of `infinimodal.options.TrainingOptions`, where each is declared with its default
                and help (the training flags of `infinimodal train --help` and of the command-line reference are the
                same fields). For example `vae.fit(data, epochs=50, predict={"label": 10})`.

        Returns:
            This model, trained.

        Raises:
            TypeError: a keyword that is not a training option.
            InfinimodalError: options that do not fit the model or the data, data whose modalities differ from the
                model's, or data standardised with other statistics than the model's.
            TrainingInterrupted: on SIGTERM (resume with `resume=True`).
        """
        settings = TrainingOptions.from_keywords(options)
        self.check_training_options(data, settings)
        refuse_other_modalities("the data", data.modalities, self.modalities)
        if self.standardization and data.standardization and self.standardization != data.standardization:
            raise InfinimodalError(
                "the data are standardised with other statistics than this model's; fit on the data set it was built for"
            )
        self.standardization = dict(data.standardization)  # saved with the model; inputs and outputs are mapped with it
        with (
            tempfile.TemporaryDirectory() as scratch,
            log_to(out_dir, f"MultimodalVAE.fit(epochs={settings.epochs}, ...)", create=True),
        ):
            out = Path(out_dir) if out_dir is not None else Path(scratch)
            result = run_training(
                self.module, data, settings, out, progress=progress, callbacks=callbacks, resume=resume
            )
            self.train_seconds = result.seconds
            self.best_val_elbo = result.best_val_elbo
            self._load_weights(result.best_checkpoint)
        self.module.eval()
        return self

    def _load_weights(self, path: Path) -> None:
        load_weights(
            self.module, path, fit=self.module.match_dimensions
        )  # tensors only: a checkpoint cannot run code (runfiles.py)
        self.module.cpu().eval()

    # --- inputs ------------------------------------------------------------------------------------------

    def as_split(self, arrays: UserRows, source: str = "the input") -> Split:
        """The rows a user passes, checked against the model's modalities, as a `Split`.

        Args:
            arrays: arrays keyed by modality (rows of NaN = missing; an absent key = missing everywhere); also a dict of
                DataFrames or AnnData objects, a MuData, an AnnData for a one-modality model, or an .npz / .h5mu path
                (`data.files.user_arrays`). A `Split` is returned as it is.
            source: how error messages name the input.

        Returns:
            The rows in the model's units (standardised where the model was trained standardised), with their mask.

        Raises:
            DataError: naming the modality, the source and the rows that cannot be read.
        """
        if isinstance(arrays, Split):
            return arrays
        tables = self._frames(arrays, source)
        if tables is not None:
            return self._as_split(tables.arrays, source, tables.ids)
        return self._as_split(user_arrays(arrays, self.names, source), source, None)

    def _frames(self, arrays, source: str):
        """pandas DataFrames of a table model, read as its tables (with their IDs), or None for any other input."""
        if holds_frames(arrays) and any(m.is_table for m in self.modalities):
            return user_tables(arrays, self.modalities, None, source, self.covariates)
        return None

    def read_rows(self, arrays: UserRows, source: str = "the input") -> Split | dict[str, np.ndarray]:
        """What a user passes for rows, read once.

        Args:
            arrays: a `Split` (returned as it is); pandas DataFrames of a table model (read as the arrays of its tables,
                `infinimodal.data.tables.user_tables`); anything else as `data.files.user_arrays` reads it.
            source: how error messages name the input.

        Returns:
            The `Split`, or the arrays keyed by modality.
        """
        if isinstance(arrays, Split):
            return arrays
        tables = self._frames(arrays, source)
        return tables.arrays if tables is not None else user_arrays(arrays, self.names, source)

    def _as_split(self, arrays: dict, source: str, ids) -> Split:
        unknown = set(arrays) - set(self.names) - {"labels", "split", COVARIATES}
        if unknown:
            raise DataError(
                f"{source}: arrays {', '.join(sorted(unknown))} are not modalities of this model ({', '.join(self.names)})"
            )
        lengths = {name: len(arrays[name]) for name in self.names if name in arrays}
        if not lengths:
            raise DataError(f"{source}: holds none of the model's modalities ({', '.join(self.names)})")
        if len(set(lengths.values())) > 1:
            raise DataError(f"{source}: modalities have different numbers of rows: {lengths}")
        n = next(iter(lengths.values()))
        out, columns = {}, []
        for modality in self.modalities:
            if modality.name not in arrays:
                out[modality.name] = np.zeros((n, *modality.shape), dtype=np.float32)
                columns.append(np.zeros(n, dtype=bool))
                continue
            values = np.asarray(arrays[modality.name])
            where = f"modality {modality.name!r} in {source}"
            if values.ndim == 1 and modality.categorical:
                # class codes (the data file's values, -1 or NaN where missing) -> one-hot rows
                values = one_hot(codes_to_positions(where, values, modality.class_values), modality.shape[0])
            if values.ndim == 1 and modality.shape == (1,):
                values = values[:, None]
            if values.shape[1:] != modality.shape:
                raise DataError(f"{where}: rows of shape {values.shape[1:]}, the model expects {modality.shape}")
            if modality.is_table:  # empty cells (NaN) allowed in an observed row
                array, observed = table_rows(where, values, modality)
            else:  # the same checks as a data file's (finite, whole-row NaN, the likelihood's support): one validator
                array, observed, _ = check_rows(where, values, modality.likelihood)
            if modality.name in self.standardization:  # the user's units -> the units the model was trained in
                array = standardize_values(self.standardization[modality.name], array, observed)
            out[modality.name] = array
            columns.append(observed)
        mask = np.stack(columns, axis=1)
        empty = ~mask.any(axis=1)
        if empty.any():
            raise DataError(
                f"{source}: rows {format_rows(empty)} have no modality observed"
                + (f" (subjects {', '.join(ids[empty][:8])})" if ids is not None else "")
            )
        if self.covariates is not None:
            out[COVARIATES] = self._covariate_rows(arrays, n, source)
        return Split(out, mask, ids=ids)

    def _covariate_rows(self, arrays: dict, n: int, source: str) -> np.ndarray:
        """The encoded covariates of the rows (tables read for this model carry them; `CovariateEncoding.encode`)."""
        covariates = self.covariates
        assert covariates is not None  # asked for a conditional model only
        values = arrays.get(COVARIATES)
        if values is None:
            raise DataError(
                f"{source}: this model is conditioned on covariates ({', '.join(covariates.names)}): give tables that hold them"
            )
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (n, covariates.width) or not np.isfinite(values).all():
            raise DataError(
                f"{source}: covariates must be {covariates.width} finite encoded values per row, got shape {values.shape}"
            )
        return values

    def _given_mask(self, mask: np.ndarray, given: Sequence[str] | None, source: str) -> np.ndarray:
        if given is None:
            return mask
        unknown = [g for g in given if g not in self.names]
        if unknown:
            raise InfinimodalError(f"unknown modalities {', '.join(unknown)}: this model has {', '.join(self.names)}")
        limited = mask & np.isin(self.names, list(given))[None, :]
        empty = ~limited.any(axis=1)
        if empty.any():
            raise DataError(
                f"{source}: rows {format_rows(empty)} have none of the given modalities ({', '.join(given)}) observed"
            )
        return limited

    # --- using a trained model ---------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, arrays: UserRows, given: Sequence[str] | None = None, decoder_space: bool = False) -> np.ndarray:
        """Posterior means given the observed modalities.

        Args:
            arrays: the rows (as `as_split` reads them; DataFrames of a table model give a DataFrame keyed by ID).
            given: use only these modalities (default: every observed one).
            decoder_space: give what the decoder reads instead of the representation: for the stick families logit
                E[v] (or pi / log pi at E[v], as the family's decoder input says) instead of E[pi]; for the gated family
                and the Gaussian both are the same (E[g r], E[z]).

        Returns:
            [rows, dimensions], in the rows' order.

        Raises:
            InfinimodalError: a name in `given` that is not a modality of the model.
            DataError: rows that cannot be read, or that have none of the `given` modalities observed.
        """
        tables = self._frames(arrays, "the input")
        if tables is not None:
            return keyed(tables, self.embed(tables.arrays, given, decoder_space))
        split = self.as_split(arrays)
        split = split.with_mask(self._given_mask(split.mask, given, "the input"))
        return encode(self.module, split)[0]["decoder_space" if decoder_space else "representation"]

    @torch.no_grad()
    def impute(
        self,
        arrays: UserRows,
        batch_size: int = 500,
        source: str = "the input",
        samples: int | None = None,
        weighted: bool = True,
    ) -> dict[str, np.ndarray]:
        """Every modality's missing rows replaced by its conditional mean E[x_m | the row's observed modalities].

        Values are in the data's own units; observed rows of arrays given by the user are returned unchanged (a data
        set's Split, already standardised, comes back mapped to the data's units). A categorical modality is filled
        with its class probabilities.

        The conditional mean is the model's own: sum_s w_s E[x_m | z_s] over `samples` draws z_s of q(z | the observed
        modalities) (`MultimodalModule.conditional_posterior`), weighted by importance,
        w_s ∝ p(X_observed | z_s) p(z_s) / q(z_s | X_observed) (`MultimodalModule.weighted_means`), so that the
        encoders' error does not enter it. docs/results.md section 10 measures it against the alternatives.

        Args:
            arrays: the rows (as `as_split` reads them). Given pandas DataFrames indexed by subject ID (a model of
                tables), every output is a DataFrame indexed by ID with the tables' feature names.
            batch_size: rows decoded at once.
            source: how error messages name the input.
            samples: posterior draws per row (default WEIGHTED_IMPUTATION_SAMPLES, or IMPUTATION_SAMPLES unweighted);
                0 decodes at the posterior's mean (a plug-in, biased through the decoder's nonlinearity).
            weighted: False averages the draws with equal weights instead (the encoders' approximation, faster).

        Returns:
            {modality: values} with every row filled.
        """
        tables = self._frames(arrays, source)
        if tables is not None:
            return keyed(tables, self.impute(tables.arrays, batch_size, source, samples, weighted), self.modalities)
        arrays = self.read_rows(arrays, source)  # read once: a path, a MuData, tables
        split = self.as_split(arrays, source)
        filled = self._observed_copy(arrays, split)
        samples = imputation_draws(samples, weighted)
        incomplete = np.flatnonzero(
            ~split.mask.all(axis=1) | empty_cells(self.module, split).any(axis=1)
        )  # rows with nothing missing need no decoding
        for start in range(0, len(incomplete), batch_size):
            rows = incomplete[start : start + batch_size]
            batch = split.batch(rows)
            means = self.module.conditional_means(
                batch["data"], batch["mask"], samples, by_row=True, weighted=weighted
            )  # a row's answer is its own
            generated = self.to_user_units({k: v.numpy() for k, v in means.items()})
            for m, name in enumerate(self.names):
                fill_missing(filled[name], rows, ~split.mask[rows, m], generated[name])
        return filled

    @torch.no_grad()
    def harmonize(
        self,
        arrays: UserRows,
        at: np.ndarray,
        batch_size: int = 500,
        source: str = "the input",
        samples: int | None = None,
        weighted: bool = True,
    ) -> dict[str, np.ndarray]:
        """Every subject as if measured at the covariates `at`.

        The encoders read each subject's own covariates, the decoders `at`. A Gaussian value that was observed keeps
        its residual, x + E[x | z, at] - E[x | z, own]; any other observed value is kept; absent rows and empty cells
        are filled with E[x | z, at] (z from the same draws for both, weighted as `impute` weighs them: by the observed
        values' likelihood at the subject's own covariates).

        Args:
            arrays: the rows (as `impute` reads them; DataFrames give DataFrames).
            at: the target covariates, encoded ([rows, K] or one row for all; `CovariateEncoding.encode` /
                `set_values`).
            batch_size: rows decoded at once.
            source: how error messages name the input.
            samples: posterior draws per row, as for `impute`.
            weighted: as for `impute`.

        Returns:
            {modality: values} in the data's units.

        Raises:
            InfinimodalError: the model is not conditioned on covariates.
        """
        if self.covariates is None:
            raise InfinimodalError("harmonisation needs a model conditioned on covariates (train with --covariates)")
        tables = self._frames(arrays, source)
        if tables is not None:
            return keyed(
                tables, self.harmonize(tables.arrays, at, batch_size, source, samples, weighted), self.modalities
            )
        arrays = self.read_rows(arrays, source)
        split = self.as_split(arrays, source)
        out = self._observed_copy(arrays, split)
        samples = imputation_draws(samples, weighted)
        target_rows = np.broadcast_to(np.asarray(at, dtype=np.float32), (len(split), self.covariates.width))
        for start in range(0, len(split), batch_size):
            rows = np.arange(start, min(start + batch_size, len(split)))
            batch = split.batch(rows)
            own = self.to_user_units(
                {
                    k: v.numpy()
                    for k, v in self.module.conditional_means(
                        batch["data"], batch["mask"], samples, by_row=True, weighted=weighted
                    ).items()
                }
            )
            at_rows = torch.from_numpy(np.ascontiguousarray(target_rows[rows]))
            target = self.to_user_units(
                {
                    k: v.numpy()
                    for k, v in self.module.conditional_means(
                        batch["data"], batch["mask"], samples, by_row=True, decode_at=at_rows, weighted=weighted
                    ).items()
                }
            )
            for m, modality in enumerate(self.modalities):
                name = modality.name
                values = out[name][rows].astype(np.float64)
                shift = gaussian_positions(modality)
                observed = split.mask[rows, m].reshape(-1, *[1] * (values.ndim - 1)) & ~np.isnan(values)
                moved = np.where(shift, values + target[name] - own[name], values)
                out[name][rows] = np.where(observed, moved, target[name])
        return out

    @torch.no_grad()
    def impute_draws(
        self, arrays: UserRows, draws: int, batch_size: int = 500, source: str = "the input", seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Multiple imputation: independent draws of every missing value from the model's predictive distribution.

        The missing rows are drawn as x_m ~ p(x_m | z), z ~ q(z | the observed modalities), in the data's units
        (binary features 0/1, counts integers, categories one-hot); observed rows are as `impute` leaves them. Their
        spread is the uncertainty of the imputation. Each row is drawn from its own seed: a subject's draws are the
        same alone or in any batch.

        Args:
            arrays: the rows (as `as_split` reads them).
            draws: how many imputed data sets.
            batch_size: rows decoded at once.
            source: how error messages name the input.
            seed: the seed the rows' own seeds derive from.

        Returns:
            {modality: [draws, rows, ...]}.
        """
        arrays = self.read_rows(arrays, source)  # read once: a path, a MuData, tables
        split = self.as_split(arrays, source)
        observed = self._observed_copy(arrays, split)
        out = {name: np.repeat(value[None], draws, axis=0) for name, value in observed.items()}
        for start in range(0, len(split), batch_size):
            rows = np.arange(start, min(start + batch_size, len(split)))
            batch = split.batch(rows)
            sampled = self.module.predictive_draws(batch["data"], batch["mask"], draws, seed)
            drawn = self.to_user_units({name: value.flatten(0, 1).numpy() for name, value in sampled.items()})
            for m, name in enumerate(self.names):
                drawn_rows = drawn[name].reshape(draws, len(rows), *drawn[name].shape[1:])
                for d in range(draws):
                    fill_missing(out[name][d], rows, ~split.mask[rows, m], drawn_rows[d])
        return out

    def _observed_copy(self, arrays, split: Split) -> dict[str, np.ndarray]:
        """What imputation starts from: the observed values in the data's units (arrays given by the user exactly as
        given; images stored as uint8 intensities as floats in [0, 1], the scale the model generates in)."""
        filled = {
            name: split.arrays[name] / np.float32(255.0)
            if split.arrays[name].dtype == np.uint8
            else split.arrays[name].copy()
            for name in self.names
        }
        for m, name in enumerate(self.names):
            if name not in self.standardization:
                continue
            if isinstance(arrays, Split):
                filled[name] = unstandardize_values(self.standardization[name], filled[name])
            elif name in arrays:  # exactly the values given
                observed = split.mask[:, m].reshape(-1, *[1] * (filled[name].ndim - 1))
                filled[name] = np.where(
                    observed, np.asarray(arrays[name], dtype=np.float32).reshape(filled[name].shape), 0.0
                ).astype(np.float32)
        return filled

    def to_user_units(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model-space values (decoder means, samples) of standardised modalities mapped back to the data's units.

        Args:
            values: {modality: values in the model's units}.

        Returns:
            {modality: values in the data's units}; modalities the model does not standardise are returned as given.
        """
        return {
            name: unstandardize_values(self.standardization[name], v) if name in self.standardization else v
            for name, v in values.items()
        }

    @torch.no_grad()
    def sample(
        self,
        n: int,
        arrays: UserRows | None = None,
        given: Sequence[str] | None = None,
        covariates: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """E[x_m | z] for every modality, z from the prior or from the posterior of given rows.

        Args:
            n: prior draws, or with `arrays` the number of leading rows to encode.
            arrays: rows whose posterior z is drawn from (default: the prior).
            given: with `arrays`, use only these modalities.
            covariates: a model conditioned on covariates decodes prior draws at these (encoded, one row for all or
                one per draw; `CovariateEncoding`); rows of `arrays` are decoded at their own.

        Returns:
            {modality: [rows, ...]} in the data's units: n rows from the prior, or with `arrays` its first n rows (all
            of them when it has fewer).
        """
        if arrays is None:
            at = (
                None
                if covariates is None
                else torch.from_numpy(
                    np.broadcast_to(np.asarray(covariates, dtype=np.float32), (n, self.module.n_covariates)).copy()
                )
            )
            return self.to_user_units(
                {k: v.numpy() for k, v in self.module.decode_mean(self.module.latent.sample_prior(n), at).items()}
            )
        split = self.as_split(arrays)
        split = split.take(slice(0, n))
        mask = self._given_mask(split.mask, given, "the input")
        batch = split.batch(np.arange(len(split)))
        q = self.module.posterior(batch["data"], torch.from_numpy(mask))
        return self.to_user_units(
            {
                k: v.numpy()
                for k, v in self.module.decode_mean(
                    self.module.latent.rsample(q), self.module.covariates_of(batch["data"])
                ).items()
            }
        )

    @torch.no_grad()
    def sample_class(self, n: int, modality: str, value: int | float | str) -> dict[str, np.ndarray]:
        """Generation from one class of a categorical modality, the other modalities unseen.

        Args:
            n: draws of z ~ q(z | x_modality = value).
            modality: a categorical modality.
            value: its class as the data gave it (e.g. a digit's label).

        Returns:
            {modality: [n, ...]}: E[x_m | z] for every modality, in the data's units.

        Raises:
            InfinimodalError: an unknown or non-categorical modality.
        """
        if modality not in self.names:
            raise InfinimodalError(f"unknown modality {modality!r}: this model has {', '.join(self.names)}")
        spec = self.modalities[self.names.index(modality)]
        if not spec.categorical:
            raise InfinimodalError(
                f"modality {modality!r} is {spec.likelihood}, not categorical: give rows of it with --data instead of a class"
            )
        split = self.as_split({modality: np.full(n, value)}, f"class {value} of {modality!r}")
        batch = split.batch(np.arange(n))
        q = self.module.posterior(batch["data"], batch["mask"])
        return self.to_user_units(
            {k: v.numpy() for k, v in self.module.decode_mean(self.module.latent.rsample(q)).items()}
        )

    def explain(self, arrays: UserRows, max_rows: int = EXPLAIN_ROWS, source: str = "the input") -> dict:
        """What each latent dimension does on these rows, in index order (`infinimodal.evaluation.explain`).

        Args:
            arrays: the rows (held-out rows: a data set's test split).
            max_rows: rows used at most.
            source: how error messages name the input.

        Returns:
            A JSON-ready dict: per dimension its KL, the variance it explains in each modality, each feature's change
            as it moves (in the data's units), whether it is shared or private, and its associations with the
            covariates, labels and categorical columns.
        """
        split = self.as_split(arrays, source)
        variables = explanation_variables(self.modalities, split, self.covariates)
        return explain_dimensions(
            self.module, split, feature_names(self.modalities), self.to_user_units, variables, max_rows
        )

    # --- clinical uses: deviation scores and synthetic cohorts -----------------------------------------------

    def score(
        self, arrays: UserRows, reference: Split, samples: int = 50, source: str = "the input"
    ) -> dict[str, np.ndarray]:
        """How atypical each row is for the population `reference` comes from (`infinimodal.deviation`).

        Args:
            arrays: the rows to score (DataFrames of a table model give a DataFrame keyed by ID).
            reference: rows of the population the model was trained on (e.g. its validation split); at least
                `deviation.MIN_REFERENCE_ROWS` (8), or InfinimodalError.
            samples: posterior draws per row.
            source: how error messages name the input.

        Returns:
            `score` and its parts, {column: [rows]} in input order.
        """
        tables = self._frames(arrays, source)
        if tables is not None:
            return keyed(tables, self.score(tables.arrays, reference, samples, source))
        return self.score_with_maps(arrays, reference, samples, source)[0]

    def score_with_maps(
        self, arrays: UserRows, reference: Split, samples: int = 50, source: str = "the input"
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """`score`'s columns and the rows' per-feature deviation z-maps.

        Args:
            arrays: the rows to score.
            reference: rows of the population the model was trained on.
            samples: posterior draws per row.
            source: how error messages name the input.

        Returns:
            (`score`'s columns, {modality: [rows, features]}): each observed feature minus the model's prediction of
            it from the row's other modalities (and covariates), in reference SDs of that residual
            (`infinimodal.feature_deviation`).
        """
        split = self.as_split(arrays, source)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            fitted = Reference.fit(self.module, reference, samples)
            z_maps = fitted.features().z_maps(self.module, split)
            return deviation_scores(self.module, split, fitted, samples, z_maps=z_maps), z_maps

    def synthesize(
        self,
        n: int,
        source: str = DEFAULT_SOURCE,
        data: MultimodalData | None = None,
        seed: int = 0,
        at: dict[str, str] | None = None,
    ) -> dict[str, np.ndarray]:
        """n synthetic subjects with every modality, drawn from the likelihoods, in the data's units (`infinimodal.synthesis`).

        Args:
            n: subjects.
            source: where latent codes come from: `prior`, or `aggregate` (the posteriors of `data`'s training rows).
            data: the training data (needed for `aggregate` and for a model with covariates).
            seed: the draws' seed.
            at: covariate values every subject gets ({"site": "A"}); the others come from a random training subject.

        Returns:
            {modality: [n, ...]}, and for a model with covariates `COVARIATES` (encoded; `self.covariates.decode`
            gives their values).

        Raises:
            InfinimodalError: an unknown source, missing training data, or covariates for a model without them.
        """
        if source not in SOURCES:
            raise InfinimodalError(f"unknown source {source!r}: choose {' or '.join(SOURCES)}")
        if (source == "aggregate" or self.covariates is not None) and data is None:
            raise InfinimodalError(
                "synthesis from the aggregate posterior, or by a model with covariates, needs the training data (data=...)"
            )
        if at and self.covariates is None:
            raise InfinimodalError("--set gives covariate values, and this model has no covariates")
        encoding = self.covariates  # not None where `at` is given (refused above)
        change = (lambda encoded: encoding.set_values(encoded, at)) if at and encoding is not None else None
        if change is not None and encoding is not None:
            change(np.zeros((1, encoding.width), dtype=np.float32))  # unknown names and classes refused before any work
        return self.to_user_units(
            synthesize(
                self.module,
                n,
                source,
                data.train_for_evaluation() if data is not None else None,
                seed,
                set_covariates=change,
            )
        )

    def synthesis_report(self, synthetic: dict[str, np.ndarray], data: MultimodalData, seed: int = 0) -> dict:
        """Privacy, fidelity and utility of synthetic rows against `data` (`infinimodal.evaluation.privacy`).

        Args:
            synthetic: the synthetic rows, as `synthesize` returns them.
            data: the training data (the rows a copier would copy) and its held-out rows.
            seed: the seed of the privacy and fidelity checks' draws.

        Returns:
            A JSON-ready dict: the row counts; `privacy` (distances to the training rows against held-out rows; with
            missing modalities also `privacy_by_modality`); `memorisation` (what copies training rows, which a
            planted copier fails); a one-line `verdict`; `warnings`; `values_unlike_the_data`; and, where there
            are training and held-out rows with every modality, `fidelity` and `utility`.
        """
        model_units = {
            name: standardize_values(self.standardization[name], values, np.ones(len(values), dtype=bool))
            if name in self.standardization
            else values
            for name, values in synthetic.items()
            if name in self.names
        }
        return synthesis_report(self.module, model_units, data, seed, user_units=self.to_user_units)

    def evaluate(
        self,
        data: MultimodalData,
        iw_samples: int = 1000,
        max_test: int | None = None,
        coherence: bool = True,
        progress: bool = True,
        seed: int = 0,
        baselines: bool = True,
    ) -> dict:
        """The metrics of `infinimodal.evaluation.metrics` on `data.test`, as eval.json holds them.

        Standardised modalities are scored in standardised units (eval.json's `standardized_modalities`).
        Deterministic: the metrics draw from torch's generator seeded with `seed` (after the coherence classifiers are
        loaded or trained, so a cached classifier gives the same figures as a fresh one).

        Args:
            data: the data set the model was trained on (its test split is scored).
            iw_samples: importance samples for log p(x), and the draws of the weighted imputation.
            max_test: score the first rows of the test split only.
            coherence: whether coherence is measured (labelled multimodal data; trains or loads classifiers).
            progress: whether progress bars are shown.
            seed: the seed of every draw.
            baselines: whether the tuned imputation and prediction baselines (`evaluate --no-baselines`: the
                training mean only) are fitted beside the model.

        Returns:
            {metric: value}: `infinimodal.evaluation.catalogue` declares each.

        Raises:
            InfinimodalError: data standardised otherwise than the model's training data.
        """
        if self.standardization != data.standardization:
            raise InfinimodalError(
                "the data are standardised differently from the data this model was trained on "
                f"(model: {sorted(self.standardization) or 'none'}, data: {sorted(data.standardization) or 'none'}, or other statistics); "
                "load the data as the model was trained (standardize setting, the same file)"
            )
        classifiers = None
        if coherence and len(self.modalities) > 1 and data.train.labels is not None:
            classifiers = load_classifiers(data, progress=progress)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            result = evaluate_model(
                self.module,
                data,
                iw_samples=iw_samples,
                max_test=max_test,
                coherence_classifiers=classifiers,
                progress=progress,
                baselines=baselines,
            )
        result["standardized_modalities"] = sorted(self.standardization)
        return result

    # --- files ------------------------------------------------------------------------------------------

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write config.json (model settings and modalities) and model.ckpt (weights) into `directory`.

        Args:
            directory: the run directory (created if needed).
            extra: entries added to config.json.

        Returns:
            The directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        record = (
            {"format": RUN_FORMAT}
            | self.config.model_fields()
            | (extra or {})
            | {
                "modalities": [m.to_dict() for m in self.modalities],
                "standardization": self.standardization,
            }
            | covariate_record(self.covariates)
        )
        write_json(out / "config.json", record)
        state = {"state_dict": {f"model.{k}": v for k, v in self.module.state_dict().items()}}
        atomic_write(out / "model.ckpt", lambda tmp: torch.save(state, tmp))
        return out

    @classmethod
    def load(cls, directory: str | Path, modalities: Sequence[Modality] | None = None) -> "MultimodalVAE":
        """Rebuild a saved model; nothing in the directory can run code (JSON and tensors only).

        Args:
            directory: a run directory (config.json and model.ckpt).
            modalities: for models with custom networks, the same modalities again. The loaded model holds copies of
                their networks, so the modules passed in (and models built on them) are untouched.

        Returns:
            The model with its saved weights, standardisation and covariates.

        Raises:
            InfinimodalError: a missing file, malformed settings, or modalities that differ from the saved ones.
        """
        run = Path(directory)
        for name in ("config.json", "model.ckpt"):
            if not (run / name).is_file():
                raise InfinimodalError(f"{run} is not a finished run directory: {name} is missing")
        record = read_config(run / "config.json")
        try:
            saved = [
                Modality.from_dict(m)
                for m in record.get("modalities", [{"name": "image", "shape": [784], "likelihood": "bernoulli"}])
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InfinimodalError(
                f"{run / 'config.json'}: a modality entry is malformed ({type(exc).__name__}: {exc})"
            ) from None
        if modalities is None:
            custom = [m["name"] for m in record.get("modalities", []) if m.get("custom_networks")]
            if custom:
                raise InfinimodalError(
                    f"{run}: modalities {', '.join(custom)} have custom networks; pass the same modalities to load()"
                )
            modalities = saved
        elif [m.signature() for m in modalities] != [m.signature() for m in saved]:
            raise InfinimodalError(f"{run}: the modalities given differ from the saved ones")
        else:
            # the loaded model gets its own copies of custom networks: loading into the caller's modules would
            # silently overwrite any other model built or loaded with the same Modality objects
            modalities = [m.with_copied_networks() for m in modalities]
        try:
            config = ModelConfig.from_dict(record)
            covariates = (
                CovariateEncoding.from_dict(record["covariate_encoding"]) if record.get("covariate_encoding") else None
            )
            vae = cls(modalities, covariates=covariates, **config.model_fields())
        except InfinimodalError as exc:
            raise InfinimodalError(f"{run / 'config.json'}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InfinimodalError(
                f"{run / 'config.json'}: settings that do not describe a model ({type(exc).__name__}: {exc})"
            ) from None
        vae.standardization = read_standardization(record, run / "config.json", vae.modalities)
        vae._load_weights(run / "model.ckpt")
        return vae


def refuse_other_modalities(source: str, given: Sequence[Modality], model: Sequence[Modality]) -> None:
    """An error naming both lists where a data set's modalities (names, shapes, likelihoods) are not the model's."""
    if [m.signature() for m in given] != [m.signature() for m in model]:
        raise InfinimodalError(
            f"{source}'s modalities {[m.signature() for m in given]} differ from the model's "
            f"{[m.signature() for m in model]}"
        )


def keyed(tables, result, modalities: Sequence[Modality] = ()):
    """A result for rows read from DataFrames, as DataFrames indexed by the subjects' IDs: an array of embeddings (one
    column per dimension), a dict of per-row arrays (scores: one DataFrame), or a dict of modality rows (one DataFrame
    per modality, its feature names as columns)."""
    import pandas as pd

    index = pd.Index(tables.ids, name=tables.id_name)
    if isinstance(result, np.ndarray):
        return pd.DataFrame(result, index=index, columns=[f"dim{j}" for j in range(result.shape[1])])
    names = {m.name: m.feature_names for m in modalities}
    if not names:
        return pd.DataFrame(result, index=index)
    return {
        name: pd.DataFrame(values.reshape(len(values), -1), index=index, columns=names.get(name))
        for name, values in result.items()
    }


def gaussian_positions(modality: Modality) -> np.ndarray:
    """Which positions of a modality's rows hold Gaussian (or Laplace) values: a table's Gaussian columns, or every
    position of a Gaussian modality."""
    if modality.is_table:
        return np.concatenate([np.full(c.width, c.family == "gaussian") for c in modality.table_columns])
    return np.full(modality.shape, modality.law.family in ("gaussian", "laplace"))


def covariate_record(covariates: CovariateEncoding | None) -> dict:
    """config.json's `covariate_encoding` (plain JSON), or nothing for a model without covariates."""
    return {} if covariates is None else {"covariate_encoding": covariates.to_dict()}


def fill_missing(values: np.ndarray, rows: np.ndarray, missing: np.ndarray, generated: np.ndarray) -> None:
    """In place: rows[missing] of `values` := the generated rows; in the other rows, empty cells (NaN, tables) := the
    generated cells."""
    values[rows[missing]] = generated[missing]
    kept = rows[~missing]
    if len(kept) and values.dtype.kind == "f":
        current = values[kept]
        values[kept] = np.where(np.isnan(current), generated[~missing], current)


# --- run directories (the command line) ---------------------------------------------------------------


def train(
    config: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    announce=None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
) -> Path:
    """Train a model and write config.json, model.ckpt, last.ckpt, metrics.csv and progress.json into `out_dir`.
    `announce(line)`, when given, hears what the user should know before training starts (a file's inferred
    likelihoods, warnings); `callbacks` are extra Lightning callbacks for `MultimodalVAE.fit`; `resume` continues
    the run in `out_dir` from its last checkpoint (use `resume_config` for its configuration)."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = read_config(out / "config.json") if resume else {}
    data = load_data(config, progress, limit_train=True)
    for line in data.notes if is_rank_zero() else []:
        log.info(line)
        if announce is not None:
            announce(line)
    vae = MultimodalVAE(data.modalities, seed=config.seed, covariates=data.covariates, **config.model_fields())
    vae.check_training_options(data, config.training_options())
    if not resume and is_rank_zero():
        # a new run in an old directory: nothing of the old run may pass for this one's (cleared only once the data
        # and options are known to be good, so a mistake in them leaves the old run as it was)
        clear_run_files(out)
    record = (
        {"format": RUN_FORMAT}
        | asdict(config)
        | {
            "data_source": data.source,
            "n_train": len(data.train),
            "n_valid": len(data.valid),
            "modalities": [m.to_dict() for m in data.modalities],
            "standardization": data.standardization,
        }
        | covariate_record(data.covariates)
        | data_file_record(config.data)
    )
    if resume:
        record["resumed"] = int(earlier.get("resumed", 0)) + 1
    writes = is_rank_zero()  # under DDP only rank 0 writes the run directory
    if writes:
        write_json(out / "config.json", record)
    log.info(
        "%s %s / %s on %s (%d training rows) into %s",
        "resuming" if resume else "training",
        config.latent,
        config.aggregator,
        data.source,
        len(data.train),
        out,
    )
    vae.fit(
        data, out_dir=out, progress=progress, callbacks=callbacks, resume=resume, **asdict(config.training_options())
    )
    # seconds of the segments that finished (a killed segment's are not known)
    record |= {
        "train_seconds": vae.train_seconds + float(earlier.get("train_seconds", 0.0)),
        "best_val_elbo": vae.best_val_elbo,
    }
    if writes:
        write_json(out / "config.json", record)
    log.info("trained in %.0f s; best validation ELBO %s", vae.train_seconds, vae.best_val_elbo)
    return out


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The configuration of a run directory to resume, refusing a run that has nothing left to do."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InfinimodalError(f"{run_dir}: nothing to resume (no config.json: not a run directory)")
    config = TrainConfig.from_dict(read_config(path))
    progress = read_progress(run_dir)
    if progress is None or progress.get("finished"):
        raise InfinimodalError(f"{run_dir}: its training already finished ({config.epochs} epochs); nothing to resume")
    return config


def load(run_dir: str | Path) -> tuple[MultimodalVAE, TrainConfig]:
    """The model of a run directory (best checkpoint) and its training configuration."""
    vae = MultimodalVAE.load(run_dir)
    path = Path(run_dir) / "config.json"
    config = TrainConfig.from_dict(read_config(path))
    try:
        config.validate()
    except InfinimodalError as exc:
        raise InfinimodalError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise InfinimodalError(f"{path}: a setting has the wrong type ({exc})") from None
    return vae, config


def load_run(run_dir: str | Path, progress: bool = True) -> tuple[MultimodalVAE, TrainConfig, MultimodalData]:
    """A run directory's model, configuration and data (what `report` and `compare` read)."""
    vae, config = load(run_dir)
    return vae, config, load_run_data(run_dir, config, progress=progress)


def evaluate(
    run_dir: str | Path,
    iw_samples: int = 1000,
    max_test: int | None = None,
    coherence: bool = True,
    progress: bool = True,
    baselines: bool = True,
) -> dict:
    """Evaluate a run on its test set and write `eval.json` (see `infinimodal.evaluation.metrics`)."""
    _check(iw_samples >= 1, f"--iw-samples must be at least 1, got {iw_samples}")
    _check(max_test is None or max_test >= 1, f"--max-test must be at least 1, got {max_test}")
    vae, config = load(run_dir)
    data = load_run_data(run_dir, config, progress)
    started = time.perf_counter()
    result = vae.evaluate(
        data,
        iw_samples=iw_samples,
        max_test=max_test,
        coherence=coherence,
        progress=progress,
        seed=config.seed,
        baselines=baselines,
    )
    result["baselines_tuned"] = baselines
    result["latent"] = config.latent
    result["aggregator"] = config.aggregator
    # the posterior family the run really uses (Kumaraswamy sticks fused under PoE / MoPoE are Beta projections)
    result["posterior_family"] = vae.module.latent.posterior_description(
        vae.module.aggregator.fuses, len(vae.modalities)
    )
    # each aggregator's ELBO is its own bound (PoE: joint; MoE: mixture; MoPoE: mixture of subset KLs)
    result["elbo_bound"] = f"{config.aggregator} ELBO"
    result["eval_seconds"] = time.perf_counter() - started
    unfinished = unfinished_warning(run_dir)
    result["training_finished"] = unfinished is None
    if unfinished:
        result.setdefault("notes", []).append(unfinished)
    write_json(Path(run_dir) / "eval.json", result)
    log.info(
        "evaluated in %.0f s: test ELBO %.3f, log p(x) %.3f (%d samples)",
        result["eval_seconds"],
        result["elbo"],
        result["log_likelihood"],
        iw_samples,
    )
    return result
