"""synth: random walks over the link graph -> obfuscated multi-hop questions with checks."""

from hopforge.synth.questions import QuestionBatch, compose_batch, plan_questions
from hopforge.synth.stage import QuestionStage, QuestionStats, run_questions

__all__ = ["QuestionBatch", "QuestionStage", "QuestionStats", "compose_batch", "plan_questions", "run_questions"]
