"""Synth stage: random walks, multi-hop questions (walks/questions modules) and rollouts (rollout modules)."""

from hopforge.synth.questions import QuestionBatch  # noqa: F401
from hopforge.synth.questions import compose_batch  # noqa: F401
from hopforge.synth.questions import plan_questions  # noqa: F401
from hopforge.synth.questions import run_questions  # noqa: F401
