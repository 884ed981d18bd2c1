"""rollouts: the agent runtime. The offline search environment, the tool protocol, the
long-horizon engine and its flush sink, and the rollout stage (questions -> trajectories, turns)."""

from hopforge.rollouts.engine import RolloutBatch, plan_rollouts, roll_out_batch, run_rollouts
from hopforge.rollouts.environment import Environment

__all__ = ["Environment", "RolloutBatch", "plan_rollouts", "roll_out_batch", "run_rollouts"]
