"""rollouts: the agent runtime. The offline search environment, the tool protocol, the
long-horizon engine and its flush sink, and the rollout stage (questions -> trajectories, turns)."""

from hopforge.rollouts.environment import Environment
from hopforge.rollouts.stage import RolloutStage, RolloutStats, run_rollouts

__all__ = ["Environment", "RolloutStage", "RolloutStats", "run_rollouts"]
