"""llm: the one teacher client (transports, retries, in-flight bound) and the model servers it
manages (vLLM, llama.cpp). Every stage that calls a model uses it; it imports no stage."""

from hopforge.llm.client import Teacher, TextClient, make_teacher

__all__ = ["Teacher", "TextClient", "make_teacher"]
