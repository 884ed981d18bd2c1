"""Synthesis: walks and questions (synth helper), environment, teachers and rollouts (rollout helper)."""

from hopforge.synth.environment import Environment as Environment
from hopforge.synth.questions import QuestionBatch  # noqa: F401
from hopforge.synth.questions import compose_batch  # noqa: F401
from hopforge.synth.questions import plan_questions  # noqa: F401
from hopforge.synth.questions import run_questions  # noqa: F401
from hopforge.synth.rollout import RolloutBatch as RolloutBatch
from hopforge.synth.rollout import plan_rollouts as plan_rollouts
from hopforge.synth.rollout import roll_out_batch as roll_out_batch
from hopforge.synth.rollout import run_rollouts as run_rollouts
from hopforge.synth.teacher import make_teacher as make_teacher
