"""Phone -> mouth-shape targets, and the coarticulated target track the audio net learns.

The audio net is trained on synthetic speech whose phone timings are known; this module turns
those timings into the three mouth parameters of the net/renderer contract
(``open`` in [0, 1], ``width`` in [-1, 1], ``closure`` in [0, 1]).  Shapes are hand-set viseme
values (jaw opening, lip spreading/rounding, bilabial press), not measured: they only need to be
consistent, ordered sensibly (aa > ae > eh > ih > iy for opening, iy wide, uw round) and to close
the lips for p/b/m.

Three kinds of phone set are handled: the CMU/radio set of the flite and festival English voices,
espeak-ng IPA (piper's VITS voice, one code point per phone), and the SAMPA-like sets of the other
festival languages.  A SAMPA phone is resolved by a rule (strip stress
digits, length marks and palatalisation doubling, then look the base up) plus per-language
overrides where a symbol means something else (Finnish ``y`` is a rounded front vowel, the CMU
``y`` a glide).

Real mouths move before the sound they serve (anticipatory coarticulation, ~30-60 ms) and relax
after it more slowly than a step; :func:`target_track` smooths the step track with an asymmetric
kernel that leans into the future, but smooths ``closure`` with a short kernel so a 60 ms /p/
still reaches a full press.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

Shape = tuple[float, float, float]  # (open, width, closure)

REST: Shape = (0.0, 0.0, 0.0)  # silence: lips closed at rest; closure is an active press only

# Viseme shapes, named for the articulation they stand for.
_V: dict[str, Shape] = {
    "rest": REST,
    "bilabial": (0.0, 0.0, 1.0),
    "labiodental": (0.08, 0.05, 0.0),
    "dental": (0.2, 0.15, 0.0),
    "alveolar": (0.22, 0.15, 0.0),
    "lateral": (0.28, 0.1, 0.0),
    "sibilant": (0.12, 0.35, 0.0),
    "postalveolar": (0.2, -0.45, 0.0),
    "velar": (0.28, 0.05, 0.0),
    "glottal": (0.35, 0.0, 0.0),
    "rhotic": (0.22, -0.35, 0.0),
    "labial_glide": (0.12, -0.85, 0.0),
    "palatal_glide": (0.22, 0.5, 0.0),
    "palatal_nasal": (0.22, 0.3, 0.0),
    # vowels
    "a": (0.9, 0.05, 0.0),
    "ae": (0.75, 0.4, 0.0),
    "ah": (0.6, 0.0, 0.0),
    "open_o": (0.7, -0.35, 0.0),
    "schwa": (0.4, 0.0, 0.0),
    "open_e": (0.58, 0.35, 0.0),
    "e": (0.48, 0.42, 0.0),
    "er": (0.32, -0.3, 0.0),
    "ih": (0.36, 0.42, 0.0),
    "i": (0.22, 0.65, 0.0),
    "uh": (0.35, -0.45, 0.0),
    "o": (0.55, -0.5, 0.0),
    "u": (0.22, -0.8, 0.0),
    "front_round": (0.24, -0.6, 0.0),  # Finnish y, German ü
    "mid_front_round": (0.45, -0.4, 0.0),  # Finnish ö
    "high_central": (0.28, 0.2, 0.0),  # Russian ы
}

# CMU/radio phone set (flite, festival English voices).  A tuple of two names is a diphthong:
# first shape for the first half of the phone, second for the rest.
CMU: dict[str, str | tuple[str, str]] = {
    "pau": "rest", "h#": "rest", "sil": "rest", "brth": "rest", "#": "rest", "_": "rest",
    "b": "bilabial", "p": "bilabial", "m": "bilabial", "em": "bilabial",
    "f": "labiodental", "v": "labiodental",
    "th": "dental", "dh": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "en": "alveolar", "dx": "alveolar",
    "nx": "alveolar", "l": "lateral", "el": "lateral",
    "s": "sibilant", "z": "sibilant",
    "sh": "postalveolar", "zh": "postalveolar", "ch": "postalveolar", "jh": "postalveolar",
    "k": "velar", "g": "velar", "ng": "velar",
    "hh": "glottal", "hv": "glottal",
    "r": "rhotic", "w": "labial_glide", "y": "palatal_glide",
    "aa": "a", "ae": "ae", "ah": "ah", "ao": "open_o", "ax": "schwa", "axr": "er", "ix": "ih",
    "eh": "open_e", "er": "er", "ih": "ih", "iy": "i", "uh": "uh", "uw": "u",
    "aw": ("a", "u"), "ay": ("a", "i"), "ey": ("e", "i"), "ow": ("o", "u"), "oy": ("open_o", "i"),
}

# SAMPA-like base table for the other festival languages (after normalisation, see _sampa_base).
SAMPA: dict[str, str | tuple[str, str]] = {
    "#": "rest", "_": "rest", "pau": "rest", "sil": "rest",
    "p": "bilabial", "b": "bilabial", "m": "bilabial",
    "f": "labiodental", "v": "labiodental", "F": "labiodental",
    "T": "dental", "D": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "r": "alveolar", "R": "alveolar",
    "rr": "alveolar", "4": "alveolar", "l": "lateral", "L": "lateral", "l~": "lateral",
    "s": "sibilant", "z": "sibilant", "ts": "sibilant", "dz": "sibilant", "c": "sibilant",
    "S": "postalveolar", "Z": "postalveolar", "tS": "postalveolar", "dZ": "postalveolar",
    "sh": "postalveolar", "zh": "postalveolar", "ch": "postalveolar", "jh": "postalveolar",
    "s~": "postalveolar", "z~": "postalveolar", "c~": "postalveolar", "r~": "alveolar",
    "k": "velar", "g": "velar", "N": "velar", "ng": "velar", "x": "velar", "G": "velar",
    "h": "glottal", "hh": "glottal", "?": "rest",
    "j": "palatal_glide", "J": "palatal_nasal", "n~": "palatal_nasal", "nj": "palatal_nasal",
    "t~": "alveolar", "d~": "alveolar", "w": "labial_glide", "y": "palatal_glide",
    "a": "a", "A": "a", "aa": "a", "{": "ae", "ae": "ae",
    "e": "e", "ee": "e", "E": "open_e", "eh": "open_e",
    "i": "i", "ii": "i", "I": "ih",
    "o": "o", "oo": "o", "O": "open_o",
    "u": "u", "uu": "u", "U": "uh",
    "@": "schwa", "ax": "schwa", "ur": "schwa",
    "au": ("a", "u"), "ai": ("a", "i"), "ei": ("e", "i"), "ou": ("o", "u"), "oi": ("o", "i"),
    "eu": ("e", "u"), "ay": ("a", "i"),
}

# Where a symbol means something else in one language.
OVERRIDES: dict[str, dict[str, str | tuple[str, str]]] = {
    "finnish": {"y": "front_round", "ä": "ae", "ae": "ae", "ö": "mid_front_round",
                "oe": "mid_front_round", "yy": "front_round"},
    "russian": {"y": "high_central", "ay": "schwa", "ur": "uh", "c": "sibilant",
                "sc": "postalveolar", "sch": "postalveolar", "ch": "postalveolar", "h": "velar",
                "hh": "velar"},
    "czech": {"c": "sibilant", "c~": "postalveolar", "h": "glottal", "x": "velar",
              "dz~": "postalveolar", "r~": "alveolar", "y": "ih"},
    "catalan": {"y": "palatal_glide", "rr": "alveolar", "ll": "lateral", "ny": "palatal_nasal"},
    "italian": {"nf": "labiodental", "ll": "lateral", "nn": "alveolar", "tt": "alveolar", "dd": "alveolar"},
}

# espeak-ng IPA, one code point per phone (piper's VITS voices; ``export.piper_corpus``).  Its
# diphthongs come as two phones (e + ɪ, a + ʊ, o + ʊ, ...), each with its own duration.
IPA: dict[str, str] = {
    "pau": "rest", "sil": "rest",
    "p": "bilabial", "b": "bilabial", "m": "bilabial",
    "f": "labiodental", "v": "labiodental", "ɱ": "labiodental",
    "θ": "dental", "ð": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "ɾ": "alveolar", "ʔ": "alveolar",
    "l": "lateral", "ɫ": "lateral",
    "s": "sibilant", "z": "sibilant",
    "ʃ": "postalveolar", "ʒ": "postalveolar",
    "k": "velar", "g": "velar", "ɡ": "velar", "ŋ": "velar", "x": "velar",
    "h": "glottal", "ɹ": "rhotic", "r": "rhotic", "w": "labial_glide", "j": "palatal_glide",
    "ç": "palatal_glide",
    "ɑ": "a", "a": "a", "æ": "ae", "ʌ": "ah", "ɐ": "schwa", "ɔ": "open_o", "ɒ": "open_o",
    "ə": "schwa", "ɚ": "er", "ɝ": "er", "ɜ": "er", "ɛ": "open_e", "e": "e", "ɪ": "ih", "ᵻ": "ih",
    "i": "i", "ʊ": "uh", "u": "u", "o": "o",
}

PHONESETS = ("cmu", "czech", "finnish", "italian", "russian", "catalan", "ipa")

_OPEN_VOWELS_CMU = frozenset({"aa", "ae", "ah", "ao", "aw", "ay", "eh"})
BILABIALS = frozenset({"p", "b", "m", "em"})


def _sampa_base(phone: str) -> list[str]:
    """Candidate spellings of a SAMPA-like phone, most specific first.

    Stress digits (``a1``), length marks (``a:``), and consonant doubling used for palatalised
    or geminate consonants (Russian ``tt``, Finnish geminates) all keep the base mouth shape.
    """
    cands = [phone]
    p = re.sub(r"[0-9]+$", "", phone)
    cands.append(p)
    p = p.rstrip(":")
    cands.append(p)
    if len(p) == 2 and p[0] == p[1]:
        cands.append(p[0])
    cands.append(p.lower())
    if p.endswith("'"):
        cands.append(p[:-1])
    return [c for c in dict.fromkeys(cands) if c]


def resolve(phone: str, phoneset: str = "cmu") -> str | tuple[str, str]:
    """Viseme name (or a diphthong's pair of names) for ``phone`` in ``phoneset``.

    Unknown phones fall back to ``"alveolar"`` (a neutral, slightly open consonant) rather than
    raising, so a new voice with a few exotic symbols still yields usable training targets;
    :func:`unknown_phones` reports them.
    """
    if phoneset == "cmu":
        key = re.sub(r"[0-9]+$", "", phone.lower())
        return CMU.get(key, "alveolar")
    if phoneset == "ipa":
        return IPA.get(phone, "alveolar")
    table = OVERRIDES.get(phoneset, {})
    for c in _sampa_base(phone):
        if c in table:
            return table[c]
        if c in SAMPA:
            return SAMPA[c]
    return "alveolar"


def unknown_phones(phones: Iterable[str], phoneset: str) -> set[str]:
    """Phones that :func:`resolve` would map by its fallback (to audit a new voice's set)."""
    out = set()
    for ph in phones:
        if phoneset == "cmu":
            known = re.sub(r"[0-9]+$", "", ph.lower()) in CMU
        elif phoneset == "ipa":
            known = ph in IPA
        else:
            known = any(c in SAMPA or c in OVERRIDES.get(phoneset, {}) for c in _sampa_base(ph))
        if not known:
            out.add(ph)
    return out


def phone_shape(phone: str, phoneset: str = "cmu") -> tuple[Shape, Shape]:
    """(first-half shape, second-half shape) of a phone; equal for monophthongs."""
    r = resolve(phone, phoneset)
    if isinstance(r, tuple):
        return _V[r[0]], _V[r[1]]
    return _V[r], _V[r]


def is_silence(phone: str, phoneset: str = "cmu") -> bool:
    """True for pause/silence symbols."""
    return resolve(phone, phoneset) == "rest"


def is_bilabial(phone: str, phoneset: str = "cmu") -> bool:
    """True for p/b/m in any phone set (the phones the renderer must close the lips for)."""
    return resolve(phone, phoneset) == "bilabial"


def is_open_vowel(phone: str, phoneset: str = "cmu") -> bool:
    """True for open vowels (aa ae ah ao aw ay eh and SAMPA equivalents) where a closure is wrong."""
    if phoneset == "cmu":
        return re.sub(r"[0-9]+$", "", phone.lower()) in _OPEN_VOWELS_CMU
    r = resolve(phone, phoneset)
    first = r[0] if isinstance(r, tuple) else r
    return _V[first][0] >= 0.55


@dataclass(frozen=True)
class Segments:
    """Phone segments of one signal: ``start``/``end`` in seconds, ``phone`` labels."""

    start: np.ndarray
    end: np.ndarray
    phone: Sequence[str]
    phoneset: str = "cmu"

    @staticmethod
    def from_ends(ends: Sequence[float], phones: Sequence[str], phoneset: str = "cmu",
                  t0: float = 0.0) -> "Segments":
        """Build from end times (what flite -psdur and festival's segs files give)."""
        e = np.asarray(ends, np.float64)
        s = np.concatenate([[t0], e[:-1]]) if e.size else e
        return Segments(s, e, list(phones), phoneset)


_VOWELS = frozenset({"a", "ae", "ah", "open_o", "schwa", "open_e", "e", "er", "ih", "i", "uh", "o", "u",
                     "front_round", "mid_front_round", "high_central"})
# Consonants made with the tongue alone: the lips are apart by what the jaw does for the vowels
# around them.  Labials (the lips themselves) and pauses keep their own shape.
_LINGUAL = frozenset({"dental", "alveolar", "lateral", "sibilant", "postalveolar", "velar", "glottal",
                      "rhotic", "palatal_glide", "palatal_nasal"})


def _jaw_coupled(shapes: np.ndarray, seg: Segments, coupling: float) -> np.ndarray:
    """Open a lingual consonant to ``coupling`` x the opening of its neighbouring vowels.

    The jaw rides a syllable cycle: between two open vowels it does not close for a /t/ or a /k/
    (only the tongue does), so the lips stay parted.  Neighbours are the nearest vowels on each
    side with no pause in between; a consonant next to a pause uses its one vowel.
    """
    names = [resolve(p, seg.phoneset) for p in seg.phone]
    first = [n[0] if isinstance(n, tuple) else n for n in names]
    out = shapes.copy()
    n = len(first)
    for i, v in enumerate(first):
        if v not in _LINGUAL:
            continue
        near = []
        for step, half in ((-1, 1), (1, 0)):
            j = i + step
            while 0 <= j < n and first[j] not in _VOWELS and _V[first[j]] != REST:
                j += step
            if 0 <= j < n and first[j] in _VOWELS:
                near.append(shapes[j, half, 0])
        if near:
            out[i, :, 0] = np.maximum(out[i, :, 0], coupling * float(np.mean(near)))
    return out


def step_track(seg: Segments, times: np.ndarray, jaw_coupling: float = 0.0) -> np.ndarray:
    """Un-smoothed targets (n, 3) at ``times`` (s); outside every segment reads as rest.

    ``jaw_coupling`` > 0 lets lingual consonants keep part of their neighbouring vowels' opening
    (:func:`_jaw_coupled`).
    """
    times = np.asarray(times, np.float64)
    out = np.zeros((times.size, 3), np.float32)
    if not len(seg.phone):
        return out
    shapes = np.array([phone_shape(p, seg.phoneset) for p in seg.phone], np.float32)  # (S,2,3)
    if jaw_coupling > 0:
        shapes = _jaw_coupled(shapes, seg, jaw_coupling)
    idx = np.searchsorted(seg.end, times, side="right")
    inside = (idx < len(seg.phone))
    idx_c = np.minimum(idx, len(seg.phone) - 1)
    inside &= times >= seg.start[idx_c]
    mid = 0.5 * (seg.start[idx_c] + seg.end[idx_c])
    half = (times >= mid).astype(np.int64)
    vals = shapes[idx_c, half]
    out[inside] = vals[inside]
    return out


def _asym_kernel(dt: float, past_s: float, future_s: float) -> np.ndarray:
    """Smoothing weights over offsets ``-past..+future`` (raised-cosine on each side).

    Index ``i`` weights the step value at ``t + (i - n_past) * dt`` for output time ``t``.
    """
    n_p = max(int(round(past_s / dt)), 0)
    n_f = max(int(round(future_s / dt)), 0)
    past = 0.5 + 0.5 * np.cos(np.pi * np.arange(-n_p, 0) / (n_p + 1)) if n_p else np.zeros(0)
    fut = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, n_f + 1) / (n_f + 1)) if n_f else np.zeros(0)
    w = np.concatenate([past, [1.0], fut])
    return (w / w.sum()).astype(np.float64)


def target_track(seg: Segments, times: np.ndarray, *, anticipation_s: float = 0.05,
                 carryover_s: float = 0.03, closure_s: float = 0.015,
                 dt: float = 0.0025, jaw_coupling: float = 0.0) -> np.ndarray:
    """Coarticulated (open, width, closure) targets at ``times`` -> (n, 3) float32.

    The step track is sampled on a fine grid (``dt``), smoothed (open/width: leaning
    ``anticipation_s`` into the future and ``carryover_s`` into the past; closure: a short
    symmetric ``closure_s`` kernel so short p/b/m keep a full press), and interpolated at
    ``times``.  ``jaw_coupling``: see :func:`step_track`.  The defaults are the evaluation's
    targets (``export.evaluate_audio``); training may ask for others (``export.train_audio``).
    """
    times = np.asarray(times, np.float64)
    if times.size == 0:
        return np.zeros((0, 3), np.float32)
    pad = max(anticipation_s, carryover_s, closure_s) + dt
    grid = np.arange(times.min() - pad, times.max() + pad + dt, dt)
    raw = step_track(seg, grid, jaw_coupling).astype(np.float64)
    k_ow = _asym_kernel(dt, carryover_s, anticipation_s)
    k_c = _asym_kernel(dt, closure_s, closure_s)
    sm = np.empty_like(raw)
    n_p = int(round(carryover_s / dt))
    for c, (k, npast) in enumerate([(k_ow, n_p), (k_ow, n_p), (k_c, int(round(closure_s / dt)))]):
        # correlate: out[t] = sum_i k[i] * raw[t + i - npast]
        padded = np.pad(raw[:, c], (npast, k.size - 1 - npast), mode="edge")
        sm[:, c] = np.correlate(padded, k, mode="valid")
    out = np.stack([np.interp(times, grid, sm[:, c]) for c in range(3)], axis=1)
    return out.astype(np.float32)


def effective_open(track: np.ndarray) -> np.ndarray:
    """open * (1 - closure): how far the lips are actually apart."""
    track = np.asarray(track)
    return track[..., 0] * (1.0 - track[..., 2])
