"""Missing-modality conditions: the seven fixed patterns and the random missing rate.

A *condition* decides which modalities a model may see for each utterance:

* a **fixed** condition is a set of available modalities applied to every utterance
  (``"at"`` = audio and text available, video missing) — the MoMKE / HARDY-MER protocol;
* a **random** condition ``random:p`` drops each modality of each utterance with probability
  ``p`` and keeps at least one of those the data holds — the MMIN / GCNet / CPM-Nets protocol.
  Masks are a pure function of ``(seed, draw, utterance index)``, so training (one draw per
  epoch) and evaluation (a fixed draw) are reproducible and resumable.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..data.validate import DataError

STANDARD_CONDITIONS = ("a", "t", "v", "at", "av", "tv", "atv")
INCOMPLETE_CONDITIONS = ("a", "t", "v", "at", "av", "tv")
# Draw numbers for evaluation masks, far from any epoch number used for training draws.
EVAL_DRAW = {"val": 1_000_001, "test": 1_000_002}


@dataclass(frozen=True)
class Condition:
    """A parsed condition.

    Attributes
    ----------
    name : str
        Canonical text form: letters/names of the available modalities (``"at"``,
        ``"audio+text"``) or ``"random:0.3"``.
    keep : tuple of str or None
        Available modalities for a fixed condition; None for a random one.
    rate : float or None
        Missing rate p of a random condition.
    """

    name: str
    keep: tuple[str, ...] | None = None
    rate: float | None = None

    @property
    def is_random(self) -> bool:
        return self.rate is not None

    def mask(self, present: np.ndarray, modalities: tuple[str, ...], seed: int = 0,
             draw: int = 0) -> np.ndarray:
        """Availability under this condition.

        Parameters
        ----------
        present : ndarray of bool, shape (n_utterances, M)
            What the data holds.
        modalities : tuple of str
            Names of the M columns.
        seed, draw : int
            Random conditions only: the mask is a pure function of (seed, draw, row).

        Returns
        -------
        ndarray of bool, shape (n_utterances, M), a subset of ``present``.
        """
        if self.keep is not None:
            keep = np.array([m in self.keep for m in modalities])
            return present & keep[None, :]
        rng = np.random.default_rng([seed, draw, 0xC0D])
        drop = rng.random(present.shape) < self.rate
        mask = present & ~drop
        # Keep at least one modality: where all were dropped, restore one present one at random.
        empty = ~mask.any(axis=1) & present.any(axis=1)
        if empty.any():
            scores = rng.random(present.shape)
            scores[~present] = -1.0
            pick = scores.argmax(axis=1)
            rows = np.nonzero(empty)[0]
            mask[rows, pick[rows]] = True
        return mask


def parse_condition(text: str, modalities: tuple[str, ...]) -> Condition:
    """Parse a condition string against a data set's modality names.

    Accepted forms: letters of single-letter modality names or of unique first letters
    (``"at"``), names joined by ``+`` (``"audio+text"``), ``"all"``, and ``"random:P"`` with
    ``0 <= P < 1``.

    Raises
    ------
    DataError
        With the condition, what is wrong and the valid choices.
    """
    text = (text or "").strip()
    names = ", ".join(modalities)
    if not text:
        raise DataError(f"empty missing-modality condition; expected letters such as 'at', names "
                        f"joined by '+', 'all', or 'random:P' (modalities: {names})",
                        field="condition")
    if text.startswith("random:"):
        try:
            rate = float(text.split(":", 1)[1])
        except ValueError:
            rate = float("nan")
        if not 0.0 <= rate < 1.0:
            raise DataError(f"condition {text!r}: the missing rate must be a number in [0, 1), "
                            "e.g. random:0.3", field="condition")
        return Condition(name=f"random:{rate:g}", rate=rate)
    if text == "all":
        return Condition(name=canonical_name(modalities, modalities), keep=tuple(modalities))
    if "+" in text or text in modalities:
        keep = [p.strip() for p in text.split("+")]
    else:
        letters = _letters(modalities)
        if letters is None:
            raise DataError(f"condition {text!r}: modalities {names} do not have unique first "
                            "letters; join names with '+' instead", field="condition")
        unknown = [c for c in text if c not in letters]
        if unknown:
            raise DataError(f"condition {text!r}: unknown modality letter(s) {''.join(unknown)!r};"
                            f" this data set has {', '.join(f'{k}={v}' for k, v in letters.items())}",
                            field="condition")
        keep = [letters[c] for c in text]
    unknown = [m for m in keep if m not in modalities]
    if unknown:
        raise DataError(f"condition {text!r}: unknown modality {unknown[0]!r}; expected one of "
                        f"{names}", field="condition")
    if len(set(keep)) != len(keep) or not keep:
        raise DataError(f"condition {text!r}: each modality at most once and at least one",
                        field="condition")
    keep_t = tuple(m for m in modalities if m in keep)
    return Condition(name=canonical_name(keep_t, modalities), keep=keep_t)


def canonical_name(keep: tuple[str, ...], modalities: tuple[str, ...]) -> str:
    letters = _letters(modalities)
    ordered = [m for m in modalities if m in keep]
    if letters is not None:
        inverse = {v: k for k, v in letters.items()}
        # The papers write conditions as a, t, v, at, av, tv, atv: keep data-set order.
        return "".join(inverse[m] for m in ordered)
    return "+".join(ordered)


def all_fixed_conditions(modalities: tuple[str, ...], include_full: bool = True) -> list[Condition]:
    """Every non-empty subset of modalities, singletons first (a, t, v, at, av, tv, atv)."""
    out = []
    for r in range(1, len(modalities) + (1 if include_full else 0)):
        for keep in combinations(modalities, r):
            out.append(Condition(name=canonical_name(keep, modalities), keep=keep))
    return out


def _letters(modalities: tuple[str, ...]) -> dict[str, str] | None:
    firsts = [m[0] for m in modalities]
    if len(set(firsts)) != len(firsts):
        return None
    return {m[0]: m for m in modalities}
