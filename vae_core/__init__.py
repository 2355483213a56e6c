"""vae_core: the method of Auto-Encoding Variational Bayes as a library of tensors in, tensors out.

Nothing here touches files, DVC or the command line (docs/design.md).
"""
from .aevb import AEVB
from .optim import OptimizerConfig
from .algorithm import DivergenceError, NonFiniteLossError, TrainingAlgorithm
from .estimators import (
    average_lower_bound,
    kl_diagonal_gaussian_to_standard_normal,
    minibatch_estimator,
    sgvb_estimator,
    sgvb_estimator_a,
    sgvb_estimator_b,
)
from .model import ModelConfig, VariationalAutoEncoder
from .networks import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder
from .training import select_step_size

__all__ = [
    "AEVB",
    "OptimizerConfig",
    "DivergenceError",
    "NonFiniteLossError",
    "TrainingAlgorithm",
    "average_lower_bound",
    "kl_diagonal_gaussian_to_standard_normal",
    "minibatch_estimator",
    "sgvb_estimator",
    "sgvb_estimator_a",
    "sgvb_estimator_b",
    "ModelConfig",
    "VariationalAutoEncoder",
    "BernoulliMLPDecoder",
    "GaussianMLPDecoder",
    "GaussianMLPEncoder",
    "select_step_size",
]
