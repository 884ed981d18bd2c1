"""Synth stage: random walks, multi-hop questions (walks/questions modules), and the offline
environment, teachers and rollouts (environment/teacher/rollout modules)."""

from hopforge.synth.environment import Environment  # noqa: F401
from hopforge.synth.questions import QuestionBatch  # noqa: F401
from hopforge.synth.questions import compose_batch  # noqa: F401
from hopforge.synth.questions import plan_questions  # noqa: F401
from hopforge.synth.questions import run_questions  # noqa: F401
from hopforge.synth.rollout import RolloutBatch  # noqa: F401
from hopforge.synth.rollout import plan_rollouts  # noqa: F401
from hopforge.synth.rollout import roll_out_batch  # noqa: F401
from hopforge.synth.rollout import run_rollouts  # noqa: F401
from hopforge.synth.teacher import make_teacher  # noqa: F401
