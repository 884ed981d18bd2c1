"""Degeneration filter: the loops and babble small teachers fall into.

* ``repeated_call_loop``: the same normalised call (tool + arguments) made
  ``max_identical_calls + 1`` times or more (default: 3 identical searches).
* ``page_loop``: one page visited ``max_page_visits + 1`` times, or an A, B, A, B
  ping-pong between two pages in consecutive visits.
* ``repeated_text``: the same assistant text of ``min_words_repeated_text``+ words in
  ``max_identical_texts + 1`` turns (short stock phrases like "Let me search." may repeat).
* ``repetitive_text``: one assistant message whose word 8-grams are mostly repeats
  (the "and the and the" collapse), measured on messages of 64+ words.
* ``empty_turn``: an assistant turn with no text, no reasoning and no call.
"""

from __future__ import annotations

from collections import Counter

from hopforge.storage.episodes import Episode
from hopforge.filters.steps import KEEP, Decision, Filter
from hopforge.text.ngrams import word_ngrams


def repeated_ngram_fraction(text: str, n: int = 8) -> float:
    """Fraction of word n-grams that duplicate an earlier n-gram of the same text."""
    words = text.split()
    if len(words) < n:
        return 0.0
    grams = word_ngrams(words, n)
    return 1.0 - len(set(grams)) / len(grams)


class DegenerationFilter(Filter):
    name = "degeneration"

    def __init__(self, max_identical_calls: int = 2, max_page_visits: int = 2, max_identical_texts: int = 2,
                 max_repeated_ngram_fraction: float = 0.5, min_words_for_repetition: int = 64,
                 min_words_repeated_text: int = 5) -> None:
        super().__init__()
        self.max_identical_calls = max_identical_calls
        self.max_page_visits = max_page_visits
        self.max_identical_texts = max_identical_texts
        self.max_repeated_ngram_fraction = max_repeated_ngram_fraction
        self.min_words_for_repetition = min_words_for_repetition
        self.min_words_repeated_text = min_words_repeated_text

    def filter(self, episode: Episode) -> Decision:
        calls = episode.calls()
        counts = Counter(c.key for c in calls)
        if counts:
            key, n = counts.most_common(1)[0]
            if n > self.max_identical_calls:
                return Decision(False, "repeated_call_loop", f"{key[0]}({key[1]!r}) x{n}")
        visits = [c.key[1] for c in calls if c.tool_name == "visit"]
        for title, n in Counter(visits).items():
            if n > self.max_page_visits:
                return Decision(False, "page_loop", f"visited {title!r} x{n}")
        for i in range(len(visits) - 3):
            a, b, c, d = visits[i : i + 4]
            if a == c and b == d and a != b:
                return Decision(False, "page_loop", f"ping-pong {a!r} <-> {b!r}")
        texts: Counter[str] = Counter()
        for t in episode.turns:
            if t.get("role") != "assistant":
                continue
            content = (t.get("content") or "").strip()
            reasoning = (t.get("reasoning") or "").strip()
            if not content and not reasoning and not t.get("tool_name") and not t.get("parse_error"):
                return Decision(False, "empty_turn", f"turn {t['turn_index']}")
            for text in (content, reasoning):
                words = text.split()
                if len(words) >= self.min_words_repeated_text:
                    texts[" ".join(words)] += 1
                if len(words) >= self.min_words_for_repetition:
                    frac = repeated_ngram_fraction(text)
                    if frac > self.max_repeated_ngram_fraction:
                        return Decision(False, "repetitive_text",
                                        f"turn {t['turn_index']}: {frac:.0%} repeated 8-grams")
        if texts:
            text, n = texts.most_common(1)[0]
            if n > self.max_identical_texts:
                return Decision(False, "repeated_text", f"{text[:80]!r} x{n}")
        return KEEP
