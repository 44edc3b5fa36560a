"""Span decoding of a biaffine table (Yu et al. 2020; NOTES item 9).

Candidates are the valid cells (s <= e < length, NOTES item 3) whose argmax class is an
entity type; they are taken by that class's probability, highest first, and a candidate is
accepted unless it clashes with one already accepted. Nested data: a clash is crossing
boundaries; flat data: any overlap. Numpy only: decoding runs on the host after the exit.
"""

from __future__ import annotations

import numpy as np

DecodedSpan = tuple[int, int, int, float]
"""``(start, end, class_id, score)``: word indices, ``end`` inclusive, class id in 1..K-1."""


def candidates(probs: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """Valid cells whose argmax is not class 0, in decoding order.

    Args:
      probs: ``[L, L, K]`` class probabilities per cell (s, e); class 0 = no entity.
      length: the real sentence length; rows/columns ``>= length`` are padding.

    Returns:
      ``(start, end, class_id, score)`` arrays ``[C]``, sorted by score descending, ties by
      (start, end) ascending, so that the result does not depend on anything but the table.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"probs must have shape [L, L, K], got {probs.shape}")
    if not 0 <= length <= probs.shape[0]:
        raise ValueError(f"length {length} outside 0..{probs.shape[0]}")
    table = probs[:length, :length]  # drop padding first: it must never matter
    cls = table.argmax(axis=-1)
    valid = np.triu(np.ones((length, length), dtype=bool))  # s <= e
    start, end = np.nonzero(valid & (cls != 0))  # row-major: ascending (start, end)
    cls = cls[start, end]
    score = table[start, end, cls]
    order = np.argsort(-score, kind="stable")  # stable keeps (start, end) order among ties
    return start[order], end[order], cls[order], score[order]


def clashes(a: tuple[int, int], b: tuple[int, int], nested: bool) -> bool:
    """Whether spans ``a`` and ``b`` (inclusive ends) cannot both be entities.

    nested=True: only crossing boundaries clash (s1 < s2 <= e1 < e2 or the mirror case);
    containment, shared boundaries included, is allowed. nested=False: any shared word.
    """
    (s1, e1), (s2, e2) = a, b
    if not nested:
        return s1 <= e2 and s2 <= e1
    return (s1 < s2 <= e1 < e2) or (s2 < s1 <= e2 < e1)


def decode_table(probs: np.ndarray, length: int, nested: bool) -> list[DecodedSpan]:
    """Greedy span decoding of one sentence's table.

    Args:
      probs: ``[L, L, K]`` probabilities (e.g. softmax of one exit's logits); padded L is fine.
      length: the real number of words; cells outside ``s <= e < length`` are ignored.
      nested: True for nested data (crossing spans clash), False for flat (overlaps clash).

    Returns:
      The accepted spans ``(start, end, class_id, score)`` sorted by (start, end), class ids
      1..K-1 and score the probability of that class in that cell.
    """
    start, end, cls, score = candidates(probs, length)
    accepted: list[DecodedSpan] = []
    for s, e, c, p in zip(start.tolist(), end.tolist(), cls.tolist(), score.tolist()):
        if not any(clashes((s, e), (a[0], a[1]), nested) for a in accepted):
            accepted.append((s, e, c, p))
    return sorted(accepted)
