"""Choice log-probabilities read from a server's top-k list, as small pure functions.

An OpenAI-compatible server returns, for a generated token, the log-probabilities of its k most
likely tokens (k <= 20), as token strings. A choice ("A") may appear there under several spellings
(" A", "(A", "A)"), or not at all. Here the spellings of a choice are summed, and a choice missing
from the list gets the smallest log-probability the list holds: its probability is at most that, so
it is an upper bound, and the score says so (`ChoiceScores.bounded`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from labeler.engine.base import ChoiceScores

# What may surround a letter in the first token of a reply that is meant to be just the letter:
# whitespace, brackets, markdown emphasis, closing punctuation.
LOOSE_SURROUNDINGS = " \t\n()[]{}*_.:,;'\"`"


def choice_of_token(token: str, choices: Sequence[str], *, loose: bool) -> str | None:
    """The choice a returned token spells, or None.

    Strict (a continued prefix such as "The better response is (" already opened the answer): only
    leading whitespace may differ, since a tokenizer can fold the space into the letter. Loose (the
    first token of a whole reply): brackets, emphasis and punctuation around the letter too. Case is
    never folded: "a" is an English word, not option A.

    >>> [choice_of_token(t, ["A", "B"], loose=False) for t in ["A", " A", "(A", "B)", "a"]]
    ['A', 'A', None, None, None]
    >>> [choice_of_token(t, ["A", "B"], loose=True) for t in ["(A", "B)", " **A", "A.", "Answer", "AB"]]
    ['A', 'B', 'A', 'A', None, None]
    """
    text = token.strip(LOOSE_SURROUNDINGS) if loose else token.lstrip()
    return text if text in choices else None


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(v))) without overflow.

    >>> round(logsumexp([math.log(0.25), math.log(0.5)]), 6) == round(math.log(0.75), 6)
    True
    """
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def scores_from_topk(top: Sequence[tuple[str, float]], choices: Sequence[str], *, loose: bool) -> ChoiceScores:
    """Per choice: the summed probability of its spellings in `top`, or the list's smallest log-probability
    (an upper bound, marked bounded) when no spelling made the list.

    `top` is the server's list of (token string, log-probability) for one position.

    >>> s = scores_from_topk([("A", math.log(0.6)), (" A", math.log(0.1)), ("C", math.log(0.05))], ["A", "B"],
    ...                      loose=False)
    >>> [round(math.exp(x), 3) for x in s.logprobs], s.bounded
    ([0.7, 0.05], (False, True))
    """
    if not top:
        raise ValueError("the server returned no top log-probabilities for the choice position")
    floor = min(logprob for _, logprob in top)
    found: dict[str, list[float]] = {choice: [] for choice in choices}
    # A server may list one token twice (the sampled token, and again in its top-k): count it once.
    # Two different tokens that read the same keep different log-probabilities and both count.
    for token, logprob in dict.fromkeys(top):
        choice = choice_of_token(token, choices, loose=loose)
        if choice is not None:
            found[choice].append(logprob)
    logprobs = tuple(logsumexp(found[c]) if found[c] else floor for c in choices)
    return ChoiceScores(logprobs, tuple(not found[c] for c in choices))
