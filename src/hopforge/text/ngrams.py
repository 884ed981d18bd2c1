"""Word n-grams: the one helper behind question near-duplicates, decontamination and degeneration."""

from __future__ import annotations

from collections.abc import Sequence

from hopforge.text.answers import answer_tokens


def word_ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Every run of ``n`` consecutive words, in order (none when there are fewer than ``n`` words)."""
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def ngram_set(text: str, n: int) -> set[str]:
    """Word n-grams of the answer-normalised text, joined by spaces; the whole text when it is shorter
    than ``n`` words (so a short question still matches itself)."""
    words = answer_tokens(text)
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(g) for g in word_ngrams(words, n)}
