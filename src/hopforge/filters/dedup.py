"""Dedup: exact duplicate trajectories (hash of the action sequence) and near-duplicate questions (MinHash LSH).

Near-duplicate questions come from walks that share most hops or templates that
render two walks alike; training on both teaches the answer, not the search.
datasketch's MinHash LSH finds candidate pairs in sub-linear time; a candidate
counts only if its estimated Jaccard similarity reaches the threshold too, so
LSH banding false positives do not drop questions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datasketch import MinHash, MinHashLSH

from hopforge.errors import ConfigError
from hopforge.text.ngrams import ngram_set
from hopforge.storage.episodes import Episode
from hopforge.filters.steps import KEEP, Decision, Filter
from hopforge.storage import content_id


def action_hash(episode: Episode) -> str:
    """Content hash of the question and the normalised sequence of calls (observations excluded)."""
    return content_id(episode.question_id, [list(c.key) for c in episode.calls()])


class DuplicateTrajectoryFilter(Filter):
    """Keeps the first trajectory of each action sequence; ``seen`` carries hashes kept by earlier runs."""

    name = "duplicate_trajectory"

    def __init__(self, seen: dict[str, str] | None = None) -> None:
        super().__init__()
        self.seen: dict[str, str] = dict(seen or {})  # action hash -> kept trajectory id

    def filter(self, episode: Episode) -> Decision:
        h = action_hash(episode)
        episode.notes["action_hash"] = h
        first = self.seen.setdefault(h, episode.trajectory_id)
        if first != episode.trajectory_id:
            return Decision(False, "duplicate_trajectory", f"same actions as trajectory {first}")
        return KEEP


def shingles(text: str, n: int = 2) -> set[bytes]:
    """Word n-grams of the normalised text (the whole text when shorter than n words).

    Bigrams, not longer shingles: questions are ~15 words, and one changed word
    removes n shingles, so trigrams would push true near-duplicates below the threshold.
    """
    return {g.encode() for g in ngram_set(text, n)}


def near_duplicate_questions(
    questions: Iterable[dict[str, Any]],
    *,
    threshold: float,
    num_perm: int,
    seed: int = 1,
    priority: set[str] | None = None,
) -> dict[str, tuple[str, str]]:
    """Map each near-duplicate question id to ``(reason, detail)`` naming the question it duplicates.

    Questions are visited in a fixed order (those in ``priority`` first, e.g. the ones
    that already have kept trajectories, then by id), and each is dropped only if it
    matches one already accepted, so the result is deterministic and reruns agree.
    """
    priority = priority or set()
    rows = sorted(questions, key=lambda q: (q["question_id"] not in priority, q["question_id"]))
    sets = [shingles(q.get("question") or "") for q in rows]
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as e:  # datasketch cannot band e.g. threshold 0.99 with 128 permutations
        raise ConfigError(f"screen.minhash_threshold={threshold} with screen.minhash_num_perm={num_perm}: "
                          f"{e}; lower the threshold or raise num_perm") from None
    sigs = MinHash.bulk(sets, num_perm=num_perm, seed=seed)
    dups: dict[str, tuple[str, str]] = {}
    accepted: dict[str, MinHash] = {}
    for q, sig, sh in zip(rows, sigs, sets, strict=True):
        qid = q["question_id"]
        if not sh:
            continue
        best: tuple[float, str] | None = None
        for other in lsh.query(sig):
            j = sig.jaccard(accepted[other])
            if j >= threshold and (best is None or j > best[0]):
                best = (j, other)
        if best is not None:
            dups[qid] = ("near_duplicate_question", f"of question {best[1]} (estimated jaccard {best[0]:.2f})")
            continue
        lsh.insert(qid, sig)
        accepted[qid] = sig
    return dups


class QuestionVerdictFilter(Filter):
    """Drops trajectories whose question a question-level step rejected (dedup, decontamination, difficulty)."""

    def __init__(self, name: str, verdicts: dict[str, tuple[str, str]]) -> None:
        self.name = name
        super().__init__()
        self.verdicts = verdicts

    def filter(self, episode: Episode) -> Decision:
        verdict = self.verdicts.get(episode.question_id)
        return KEEP if verdict is None else Decision(False, *verdict)
