"""Answer normalisation and matching: normalised exact match and token F1.

The normalisation is the SQuAD / HotpotQA one (lower case, no punctuation, no
articles, collapsed whitespace) extended with Unicode folding, so "Ångström"
matches "angstrom" and "Mercury (planet)" matches "mercury planet". A
prediction is compared against the answer and every alias; the best score wins.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")
_DIGIT_GROUP = re.compile(r"(?<=\d)[,\u00a0\u202f ](?=\d{3}(?!\d))")
_ASCII_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str | None) -> str:
    """Fold case, accents and compatibility forms; drop punctuation and English articles."""
    if not text:
        return ""
    # Digit grouping is formatting, not content: "1,234,567" and "1 234 567" both mean 1234567.
    text = _DIGIT_GROUP.sub("", text)
    if text.isascii():  # fast path (most answers and questions), tested equal to the Unicode path
        return _SPACES.sub(" ", _ARTICLES.sub(" ", text.lower().translate(_ASCII_PUNCT))).strip()
    return _normalize_unicode(text)


def _normalize_unicode(text: str) -> str:
    # NFKD splits accented letters into base + combining mark (dropped below) and folds
    # compatibility forms (full-width digits, ligatures) to their plain equivalents.
    text = unicodedata.normalize("NFKD", text).casefold()
    chars = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Mn":
            continue
        # Punctuation and symbols become spaces, not nothing: "Jean-Paul" -> "jean paul".
        chars.append(" " if cat[0] in "PS" else ch)
    text = _ARTICLES.sub(" ", "".join(chars))
    return _SPACES.sub(" ", text).strip()


def answer_tokens(text: str | None) -> list[str]:
    return normalize_answer(text).split()


def token_f1(prediction: str | None, reference: str | None) -> float:
    """Bag-of-tokens F1 between two answers after :func:`normalize_answer`."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class AnswerMatch:
    exact: bool
    f1: float
    matched: str | None  # the reference (answer or alias) that scored best


def match_answer(prediction: str | None, answer: str, aliases: Iterable[str] | None = ()) -> AnswerMatch:
    """Best exact-match / F1 of ``prediction`` against ``answer`` and all ``aliases``."""
    references = [answer, *(aliases or ())]
    norm_pred = normalize_answer(prediction)
    best = AnswerMatch(False, 0.0, None)
    for ref in references:
        if not ref:
            continue
        if norm_pred and norm_pred == normalize_answer(ref):
            return AnswerMatch(True, 1.0, ref)
        f1 = token_f1(prediction, ref)
        if f1 > best.f1:
            best = AnswerMatch(False, f1, ref)
    return best


def answer_is_correct(prediction: str | None, answer: str, aliases: Iterable[str] | None = (),
                      f1_threshold: float = 0.8) -> bool:
    """The rule verdict: normalised exact match, or token F1 >= ``f1_threshold``, against the answer
    or any alias. The one definition the correctness filter, difficulty and the RL reward share."""
    m = match_answer(prediction, answer, aliases)
    return m.exact or m.f1 >= f1_threshold
