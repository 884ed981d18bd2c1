"""synth: random walks over the link graph -> obfuscated multi-hop questions with checks."""

from hopforge.synth.questions import QuestionBatch, compose_batch, plan_questions, run_questions

__all__ = ["QuestionBatch", "compose_batch", "plan_questions", "run_questions"]
