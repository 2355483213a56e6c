"""One home for run directories (docs/design.md, "File contracts"): every stage reads them here.

``runs/<experiment>/<configuration>/seed<N>/`` (a run: one configuration, one seed) holds

- ``config.json``: the resolved :class:`~pipeline.runs.config.RunConfig`, plus what training
  resolved (``n_train``, ``resolved_device``, ``fingerprint``, the evaluation and checkpoint
  schedules);
- ``curve.csv``, ``final.json``: the training curve and its summary (:mod:`pipeline.training.train`);
- ``checkpoints/samples_<samples seen>.pt``: at fixed sample counts, each recorded with its sha256
  in ``checkpoints/manifest.json`` once written;
The evaluation stage writes a run's marginal likelihoods outside it, to
``runs/marginal_likelihood/<experiment>/<configuration>/seed<N>.csv``
(:func:`marginal_likelihood_path`): DVC outputs may not overlap, and a configuration's training
stage owns its whole folder.

This module reads config.json (:func:`read_run_config`, :func:`run_identity`), lists and loads
checkpoints, builds the model a run trained (:func:`build_model`, :func:`model_from_checkpoint`)
and loads the data a run sees (:func:`load_run_data`). A checkpoint is read only if its sha256
matches the manifest (a damaged file is refused, not evaluated), and with
``torch.load(weights_only=True)``: checkpoints hold tensors and plain Python values only, so a run
directory from elsewhere (a DVC remote, a colleague) can never run code when it is read.
"""
from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vae_core.model import ModelConfig, VariationalAutoEncoder

from pipeline.plumbing.files import sha256_of, write_json
from pipeline.data.prepared import PIXEL_SCALE, load_prepared
from pipeline.runs.config import RunConfig, dataset_spec
from pipeline.plumbing.errors import UserError

CONFIG_FILE = "config.json"
CURVE_FILE = "curve.csv"
FINAL_FILE = "final.json"
CHECKPOINTS_DIR = "checkpoints"
MARGINAL_LIKELIHOOD_FILE = "marginal_likelihood.csv"
CHECKPOINT_MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
RETRAIN_DIR = ".retrain"  # a finished run retrained: the new run is written here, then replaces it
# What vaebench writes in a run directory (and in its checkpoints/), besides the temporaries of
# pipeline.plumbing.files.write_atomically (".<name>.XXXXXXXX.tmp").
RUN_ENTRIES = (CONFIG_FILE, CURVE_FILE, FINAL_FILE, CHECKPOINTS_DIR, MARGINAL_LIKELIHOOD_FILE, LOCK_FILE, RETRAIN_DIR)
TRAINING_RECORD = ("n_train", "fingerprint")  # what training adds to the configuration in config.json


class MissingRunError(FileNotFoundError):
    """A run directory, or a file in it, that a stage needs has not been written yet."""


class CorruptRunError(ValueError):
    """A file in a run directory cannot be read as what it should be."""


class NotARunDirectoryError(ValueError):
    """A folder given as a run directory holds files vaebench did not write."""


class RunLockedError(UserError, RuntimeError):
    """Another process is writing the run directory."""


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
        "run": run_dir.parent.name,  # the configuration; its seeds share the name
        "seed": int(config.seed),
        "experiment": config.experiment,
        "dataset": config.dataset,
        "algorithm": config.algorithm,
        "nz": config.z_dim,
        "hidden_units": config.hidden_units,
        "ntrain": int(config.ntrain if config.ntrain is not None else stored["n_train"]),
        "binarize": config.binarize,
    }


SEED_PREFIX = "seed"
EVALUATION_BINARIZATION_SEED = 20131221  # dynamic binarization: the evaluation subsets' one draw
MARGINAL_LIKELIHOOD_ROOT = "marginal_likelihood"


def seed_run_dir(configuration_dir: str | Path, seed: int) -> Path:
    """The run directory of one seed of a configuration: ``<configuration_dir>/seed<N>``."""
    return Path(configuration_dir) / f"{SEED_PREFIX}{int(seed)}"


def _seed_number(path: Path) -> int | None:
    suffix = path.name[len(SEED_PREFIX):]
    return int(suffix) if path.name.startswith(SEED_PREFIX) and suffix.isdigit() else None


def seed_directories(configuration_dir: str | Path) -> list[Path]:
    """The run directories (``seed<N>/`` with a config.json) of a configuration, by seed number."""
    root = Path(configuration_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _seed_number(p) is not None and (p / CONFIG_FILE).is_file()]
    return sorted(found, key=_seed_number)


def run_directories(runs_root: str | Path, experiment: str) -> list[Path]:
    """Every run directory (``<configuration>/seed<N>/`` with a config.json) of an experiment,
    sorted by configuration name, then seed number."""
    root = Path(runs_root) / experiment
    if not root.is_dir():
        return []
    return [run for configuration in sorted(p for p in root.iterdir() if p.is_dir())
            for run in seed_directories(configuration)]


def marginal_likelihood_path(run_dir: str | Path, runs_root: str | Path | None = None) -> Path:
    """Where the evaluation stage writes a run's marginal likelihoods:
    ``<runs_root>/marginal_likelihood/<experiment>/<configuration>/seed<N>.csv`` (``runs_root``
    defaults to the folder three levels above the run)."""
    run_dir = Path(run_dir)
    experiment_dir = run_dir.parent.parent
    root = Path(runs_root) if runs_root is not None else experiment_dir.parent
    return root / MARGINAL_LIKELIHOOD_ROOT / experiment_dir.name / run_dir.parent.name / f"{run_dir.name}.csv"


def _is_temporary_of(name: str, owners: tuple[str, ...]) -> bool:
    """Whether ``name`` is a write_atomically temporary of one of ``owners`` (.<owner>.XXXXXXXX.tmp)."""
    return any(fnmatch.fnmatchcase(name, f".{owner}.????????.tmp") for owner in owners)


def foreign_entries(run_dir: Path) -> list[str]:
    """The entries of ``run_dir`` (and of its checkpoints/) that vaebench does not write there."""
    foreign = [p.name for p in run_dir.iterdir()
               if p.name not in RUN_ENTRIES and not _is_temporary_of(p.name, RUN_ENTRIES)]
    checkpoints = run_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        foreign += [f"{CHECKPOINTS_DIR}/{p.name}" for p in checkpoints.iterdir()
                    if not (fnmatch.fnmatchcase(p.name, "samples_*.pt") or p.name == CHECKPOINT_MANIFEST
                            or _is_temporary_of(p.name, ("samples_*.pt", CHECKPOINT_MANIFEST)))]
    return sorted(foreign)


def check_run_directory(run_dir: Path) -> None:
    """Refuse a ``run_dir`` that is not a (possibly empty or new) run directory of vaebench's, so
    that training never deletes or overwrites files it did not write."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NotARunDirectoryError(f"{run_dir} is a file, not a run directory: choose another --out")
    if not run_dir.is_dir():
        return
    foreign = foreign_entries(run_dir)
    if foreign:
        raise NotARunDirectoryError(
            f"{run_dir} holds files vaebench did not write ({', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}): it is not a run directory, and training would overwrite or "
            f"delete them. Choose a new or empty --out, or move those files away")
    # what training would replace (it never touches marginal_likelihood.csv, the evaluation's)
    written = [name for name in (CURVE_FILE, FINAL_FILE, CHECKPOINTS_DIR) if (run_dir / name).exists()]
    if written and not (run_dir / CONFIG_FILE).is_file():
        raise NotARunDirectoryError(
            f"{run_dir} holds {', '.join(written)} but no {CONFIG_FILE}: they were not written by a vaebench "
            f"run (a run writes {CONFIG_FILE} first). Choose a new or empty --out, or move them away")
    if (run_dir / CONFIG_FILE).is_file():
        read_run_config(run_dir)  # not ours, or damaged: a clear error naming the file


def check_configuration_directory(configuration_dir: Path) -> None:
    """Refuse a configuration folder (the ``--out`` of ``vaebench train``) that holds anything but
    its seeds' run directories (``seed<N>/``), so that training never writes among files it did
    not write; each seed's run directory is then checked by :func:`check_run_directory`."""
    configuration_dir = Path(configuration_dir)
    if configuration_dir.exists() and not configuration_dir.is_dir():
        raise NotARunDirectoryError(f"{configuration_dir} is a file, not a configuration's folder: choose another --out")
    if not configuration_dir.is_dir():
        return
    foreign = sorted(p.name for p in configuration_dir.iterdir() if not (p.is_dir() and _seed_number(p) is not None))
    if foreign:
        hint = (" (it is a run directory: --out names the configuration's folder, which holds one run directory "
                "per seed, seed<N>/)" if CONFIG_FILE in foreign else "")
        raise NotARunDirectoryError(
            f"{configuration_dir} holds files that are not seeds' run directories ({', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}){hint}: choose a new or empty --out, or move them away")


@contextmanager
def locked_run_directory(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock while writing it: a second process that tries fails at once with a
    clear error, instead of interleaving its files with the first's. The lock (an exclusive
    ``flock`` on ``run_dir/.lock``) dies with the process, so a killed run leaves none behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another vaebench process"
            raise RunLockedError(f"{holder} is writing {run_dir}: wait for it to finish, or write this run "
                                 f"elsewhere (--out)") from None
        # who holds it, for the message of a process refused above (the file is the lock, not its content)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv[:1] + sys.argv[1:8])[:150]})".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_directory_in_use(run_dir: Path) -> bool:
    """Whether another process holds ``run_dir``'s lock now (:func:`locked_run_directory`)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_temporaries(run_dir: Path) -> None:
    """Delete the half-written files a killed run left (never read); only vaebench's own, under the lock."""
    for folder, owners in ((run_dir, RUN_ENTRIES), (run_dir / CHECKPOINTS_DIR, ("samples_*.pt", CHECKPOINT_MANIFEST))):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _is_temporary_of(path.name, owners):
                    path.unlink(missing_ok=True)


def replace_run(staging: Path, run_dir: Path) -> None:
    """Move a finished run from ``staging`` over the one in ``run_dir``, ``final.json`` last (until
    it moves, ``staging`` still holds a finished run and a re-run completes the move)."""
    for name in (CHECKPOINTS_DIR, CURVE_FILE, CONFIG_FILE, FINAL_FILE):
        target = run_dir / name
        if (staging / name).exists():
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    shutil.rmtree(staging)


def checkpoint_path(run_dir: str | Path, samples_seen: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"samples_{samples_seen:012d}.pt"


def read_checkpoint_manifest(run_dir: str | Path) -> dict[str, str]:
    """``checkpoints/manifest.json``: the sha256 of every checkpoint the run wrote, by file name."""
    path = Path(run_dir) / CHECKPOINTS_DIR / CHECKPOINT_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise CorruptRunError(f"{path} cannot be read ({err}); delete the run directory and train it again") from None
    return manifest if isinstance(manifest, dict) else {}


def record_checkpoint(path: Path) -> None:
    """Add a checkpoint just written to its run's manifest (written atomically after the checkpoint:
    a run killed in between leaves a checkpoint that is not recorded, which nothing trusts)."""
    manifest = read_checkpoint_manifest(path.parent.parent)
    manifest[path.name] = sha256_of(path)
    write_json(path.parent / CHECKPOINT_MANIFEST, manifest)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's checkpoints in order of samples seen; at least one, or MissingRunError."""
    paths = sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("samples_*.pt"))
    if not paths:
        raise MissingRunError(f"{Path(run_dir) / CHECKPOINTS_DIR} holds no checkpoints: train the run first")
    return paths


def require_finished(run_dir: str | Path) -> dict:
    """The contents of a run's ``final.json``; MissingRunError if the run has not finished."""
    path = Path(run_dir) / FINAL_FILE
    if not path.is_file():
        raise MissingRunError(f"{run_dir} has not finished training (no {FINAL_FILE}): finish it with the same "
                              f"`vaebench train` (it resumes) or `dvc repro`, then evaluate it")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptRunError(f"{path} cannot be read ({err}); train the run again") from None


def final_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint at the end of a finished run's budget."""
    path = checkpoint_path(run_dir, int(require_finished(run_dir)["samples_seen"]))
    if not path.is_file():
        raise MissingRunError(f"{path} not found, though {run_dir} finished: train the run again")
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's contents, after checking its sha256 against the run's manifest, loaded
    without running any code (``weights_only=True``)."""
    path = Path(path)
    recorded = read_checkpoint_manifest(path.parent.parent).get(path.name)
    if recorded is None:
        raise CorruptRunError(f"checkpoint {path} is not recorded in {CHECKPOINTS_DIR}/{CHECKPOINT_MANIFEST} (a run "
                              f"killed while writing it, or a file from elsewhere); re-run the training to replace it")
    if sha256_of(path) != recorded:
        raise CorruptRunError(f"checkpoint {path} has changed since it was written (its sha256 differs from the "
                              f"manifest's): it is damaged; delete the run directory and train it again")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # not a checkpoint torch can read without running code
        raise CorruptRunError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"delete the run directory and train it again") from None


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
    drawn from a generator of their own seeded with :data:`EVALUATION_BINARIZATION_SEED`, the same
    for every seed of a configuration (the training RNG stream is untouched)."""
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
    if config.binarize == "dynamic":  # one binarization, the same for every seed: common evaluation points
        generator = torch.Generator().manual_seed(EVALUATION_BINARIZATION_SEED)
        eval_train = torch.bernoulli(eval_train.cpu(), generator=generator).to(device)
        eval_test = torch.bernoulli(eval_test.cpu(), generator=generator).to(device)
    return RunData(train, eval_train, eval_test)


def find_resumable_checkpoint(run_dir: Path, fingerprint: str) -> dict | None:
    """The newest readable checkpoint of an interrupted run with the same fingerprint, or None."""
    if (run_dir / FINAL_FILE).exists() or not (run_dir / CHECKPOINTS_DIR).is_dir():
        return None
    for path in sorted((run_dir / CHECKPOINTS_DIR).glob("samples_*.pt"), reverse=True):
        try:
            state = load_checkpoint(path)
        except CorruptRunError:  # an unreadable checkpoint is skipped, not trusted
            continue
        if state.get("fingerprint") == fingerprint:
            state["path"] = str(path)
            return state
    return None


def finished_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint of the finished run in ``run_dir`` (None if there is none)."""
    if not (run_dir / FINAL_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        return None
    try:
        return json.loads((run_dir / CONFIG_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None
