"""Decontamination: drop questions sharing a word n-gram with a benchmark's questions.

The GPT-3 / Llama recipe: normalised word n-grams (``decontam_ngram``, 13 by
default) of every benchmark question go into a set; a question overlapping any
of them is contaminated. Texts shorter than n words are compared whole, so a
short benchmark question copied verbatim is still caught.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hopforge.errors import ConfigError
from hopforge.text.ngrams import ngram_set


def load_benchmark(path: Path, n: int) -> dict[str, int]:
    """n-gram -> 1-based line number of the first benchmark question containing it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"screen.decontaminate: benchmark file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"screen.decontaminate: {path} is not UTF-8 text ({e})") from None
    index: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        for g in ngram_set(line, n):
            index.setdefault(g, lineno)
    if not index:
        raise ConfigError(f"screen.decontaminate: {path} has no questions (one per line expected)")
    return index


def contaminated_questions(questions: Iterable[dict[str, Any]], benchmark: dict[str, int], n: int,
                           source: str = "benchmark") -> dict[str, tuple[str, str]]:
    """Map each contaminated question id to ``(reason, detail)`` naming the benchmark line."""
    out: dict[str, tuple[str, str]] = {}
    for q in questions:
        for g in ngram_set(q.get("question") or "", n):
            line = benchmark.get(g)
            if line is not None:
                out[q["question_id"]] = ("benchmark_overlap", f"{source} line {line} shares {g[:80]!r}")
                break
    return out
