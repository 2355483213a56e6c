"""The paper's baselines, built from vae_core's parts: wake-sleep (Figure 2) and MCEM (Figure 3)."""
from .mcem import MonteCarloEM
from .wake_sleep import WakeSleep

__all__ = ["MonteCarloEM", "WakeSleep"]
