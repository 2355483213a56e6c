"""One home for run directories (docs/design.md, "File contracts"): every stage reads them here.

``runs/<experiment>/<run-id>/`` holds

- ``config.json``: the resolved :class:`~pipeline.run_config.RunConfig`, plus what training
  resolved (``n_train``, ``resolved_device``, ``fingerprint``, the evaluation and checkpoint
  schedules);
- ``curve.csv``, ``final.json``: the training curve and its summary (:mod:`pipeline.train`);
- ``checkpoints/samples_<samples seen>.pt``: at fixed sample counts;
- ``marginal_likelihood.csv``: added by the evaluation stage (Figure 3 runs).

This module reads config.json (:func:`read_run_config`, :func:`run_identity`), lists and loads
checkpoints, builds the model a run trained (:func:`build_model`, :func:`model_from_checkpoint`)
and loads the data a run sees (:func:`load_run_data`). Checkpoints are loaded with
``torch.load(weights_only=True)``: they hold tensors and plain Python values only, so a run
directory from elsewhere (a DVC remote, a colleague) can never run code when it is read.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from vae_core.model import ModelConfig, VariationalAutoEncoder

from .prepared_data import PIXEL_SCALE, load_prepared
from .run_config import RunConfig, dataset_spec

CONFIG_FILE = "config.json"
CURVE_FILE = "curve.csv"
FINAL_FILE = "final.json"
CHECKPOINTS_DIR = "checkpoints"
MARGINAL_LIKELIHOOD_FILE = "marginal_likelihood.csv"
TRAINING_RECORD = ("n_train", "fingerprint")  # what training adds to the configuration in config.json


class MissingRunError(FileNotFoundError):
    """A run directory, or a file in it, that a stage needs has not been written yet."""


class CorruptRunError(ValueError):
    """A file in a run directory cannot be read as what it should be."""


def _read_config_json(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise MissingRunError(f"{path} not found: {run_dir} is not a trained run directory "
                              f"(run `vaebench train` or `dvc repro` first)")
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRunError(f"{path} is not valid JSON ({err}); delete the run directory and train it again") from None
    if not isinstance(stored, dict):
        raise CorruptRunError(f"{path} must hold a JSON object; delete the run directory and train it again")
    return stored


def _config_from(stored: dict, run_dir: Path) -> RunConfig:
    names = [f.name for f in fields(RunConfig)]
    missing = [f.name for f in fields(RunConfig)
               if f.name not in stored and f.default is MISSING and f.default_factory is MISSING]
    missing += [key for key in TRAINING_RECORD if key not in stored]
    if missing:
        raise CorruptRunError(
            f"{run_dir / CONFIG_FILE} lacks {', '.join(missing)}: it was written by another version of "
            f"vaebench; train the run again (delete the directory, then `vaebench train` or `dvc repro`)")
    config = RunConfig(**{k: v for k, v in stored.items() if k in names})
    return replace(config, step_size_grid=tuple(config.step_size_grid))


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` a run was trained with, from its ``config.json``."""
    return _config_from(_read_config_json(Path(run_dir)), Path(run_dir))


def run_identity(run_dir: str | Path) -> dict:
    """The columns that say which configuration a run is (experiment, dataset, algorithm, Nz,
    hidden units, Ntrain: the size of the training set it saw, the MNIST binarization), from its
    ``config.json``."""
    run_dir = Path(run_dir)
    stored = _read_config_json(run_dir)
    config = _config_from(stored, run_dir)
    return {
        "run": run_dir.name,
        "experiment": config.experiment,
        "dataset": config.dataset,
        "algorithm": config.algorithm,
        "nz": config.z_dim,
        "hidden_units": config.hidden_units,
        "ntrain": int(config.ntrain if config.ntrain is not None else stored["n_train"]),
        "binarize": config.binarize,
    }


def run_directories(runs_root: str | Path, experiment: str) -> list[Path]:
    """Every run directory (one with a config.json) of an experiment, sorted by name."""
    root = Path(runs_root) / experiment
    return sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []


def checkpoint_path(run_dir: str | Path, samples_seen: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"samples_{samples_seen:012d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's checkpoints in order of samples seen; at least one, or MissingRunError."""
    paths = sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("samples_*.pt"))
    if not paths:
        raise MissingRunError(f"{Path(run_dir) / CHECKPOINTS_DIR} holds no checkpoints: train the run first")
    return paths


def final_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint at the end of a run's budget (the newest one)."""
    return list_checkpoints(run_dir)[-1]


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's contents, loaded without running any code (``weights_only=True``)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, corrupted, or carrying pickled objects
        raise CorruptRunError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"delete it and re-run the stage that wrote it") from None


def build_model(config: RunConfig, device: torch.device | str = "cpu") -> VariationalAutoEncoder:
    """The freshly initialized model of a run's configuration (consumes torch's global RNG)."""
    spec = dataset_spec(config.dataset)
    return VariationalAutoEncoder(
        ModelConfig(spec.x_dim, config.z_dim, config.hidden_units, spec.decoder, config.init_std)).to(device)


def model_from_checkpoint(config: RunConfig, state: dict, device: torch.device | str = "cpu") -> VariationalAutoEncoder:
    """The model of a checkpoint (its ``algorithm.model`` state), in evaluation mode."""
    model = build_model(config, device)
    try:
        model.load_state_dict(state["algorithm"]["model"])
    except (KeyError, RuntimeError) as err:
        raise CorruptRunError(f"the checkpoint does not hold the model of this run's config.json ({err})") from None
    return model.eval()


@dataclass
class RunData:
    train: torch.Tensor  # (Ntrain, D) float32 intensities, on the run's device
    eval_train: torch.Tensor
    eval_test: torch.Tensor


def load_run_data(config: RunConfig, prepared_dir: str | Path, device: torch.device | str,
                  eval_train_points: int | None = None, eval_test_points: int | None = None) -> RunData:
    """Training set and evaluation subsets (the first ``eval_train_points`` training and
    ``eval_test_points`` test points; by default the run's own) as float32 tensors on ``device``
    (pixel / 256). With dynamic binarization the evaluation subsets are one fixed binarization,
    drawn from a generator of their own (the training RNG stream is untouched)."""
    arrays = load_prepared(config.prepared_file, prepared_dir)

    def to_tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.astype(np.float32) / np.float32(PIXEL_SCALE)).to(device)

    train = to_tensor(arrays["train_x"])
    expected_dim = dataset_spec(config.dataset).x_dim
    if train.shape[1] != expected_dim:
        raise ValueError(
            f"{config.prepared_file}.npz has {train.shape[1]} values per datapoint, expected "
            f"{expected_dim}; re-run `vaebench data prepare`"
        )
    if config.ntrain is not None and train.shape[0] != config.ntrain:
        raise ValueError(
            f"{config.prepared_file}.npz holds {train.shape[0]} training points, expected "
            f"Ntrain = {config.ntrain}"
        )
    eval_train = train[: eval_train_points or config.eval_train_points]
    eval_test = to_tensor(arrays["test_x"][: eval_test_points or config.eval_test_points])
    if config.binarize == "dynamic":
        generator = torch.Generator().manual_seed(config.seed + 1)
        eval_train = torch.bernoulli(eval_train.cpu(), generator=generator).to(device)
        eval_test = torch.bernoulli(eval_test.cpu(), generator=generator).to(device)
    return RunData(train, eval_train, eval_test)
