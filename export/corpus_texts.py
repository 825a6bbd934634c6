"""Texts for the synthetic voices: random dictionary words for English, pseudo-words elsewhere.

English voices also speak a few fixed sentences written to cover English phones densely
(bilabials and rounded vowels in particular).  The word list ships in ``export/assets``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# Sentences written to cover English phones densely, bilabials and rounded vowels in particular.
RICH_SENTENCES = (
    "Bob brought a big map of the bay to my mother",
    "Pam paid for the purple paper and the blue pen",
    "Should you move the oval mirror toward the window",
    "We keep cheap cheese in the deep freezer by the beach",
    "Father saw the dog jump over a large hot pot",
    "The boy with the toy enjoyed a noisy voyage",
    "How about the brown cow out on the mountain",
    "Five thin thieves thought they heard the vivid music",
    "Judge George measured the usual beige garage",
    "My wife likes to ride her bike in the white light",
    "Put the book by the wool bush and look at it",
    "Maybe Mimi may remember a moment in May",
    "Hello, how are you today? I am fine, thank you",
    "Please open the window, the room is very warm",
)

_LANG_SYLLABLES: dict[str, tuple[str, str]] = {
    # (consonants, vowels) spelled in each language's own (ASCII) orthography
    "czech": ("p b m t d n k g f v s z h ch r l j c", "a e i o u y a e o"),
    "finnish": ("p t k m n s h l r v j", "a e i o u y a aa ii uu ee"),
    "italian": ("p b m t d n c g f v s l r z", "a e i o u a o"),
    "catalan": ("p b m t d n c g f v s l r x", "a e i o u a"),
    "russian": ("п б м т д н к г ф в с з л р ш ж ч х", "а е и о у ы а о"),
}

_WORD_RE = re.compile(r"^[a-z]{2,12}$")


# Shipped with the package (export/assets/README.md says where it comes from): the corpus reads no
# system word list, which a fresh machine need not have.
WORDS_PATH = Path(__file__).resolve().parent / "assets" / "words.txt"


def _english_words() -> list[str]:
    words = [w.strip() for w in WORDS_PATH.read_text(encoding="utf-8").split()]
    return [w for w in words if _WORD_RE.match(w)]


def english_sentence(rng: np.random.Generator, words: list[str]) -> str:
    """Random dictionary words (4-12) with occasional commas: varied phones and in-phrase pauses."""
    n = int(rng.integers(4, 13))
    parts = []
    for i in range(n):
        w = words[int(rng.integers(len(words)))]
        parts.append(w + ("," if i < n - 1 and rng.random() < 0.12 else ""))
    return " ".join(parts)


def foreign_sentence(rng: np.random.Generator, language: str) -> str:
    """Pseudo-words of CV(C) syllables in the language's spelling, 3-9 words, some commas."""
    cons, vows = (s.split() for s in _LANG_SYLLABLES[language])
    words = []
    n = int(rng.integers(3, 10))
    for i in range(n):
        syl = []
        for _ in range(int(rng.integers(1, 4))):
            syl.append(cons[int(rng.integers(len(cons)))] + vows[int(rng.integers(len(vows)))])
            if rng.random() < 0.2:
                syl.append(cons[int(rng.integers(len(cons)))])
        words.append("".join(syl) + ("," if i < n - 1 and rng.random() < 0.15 else ""))
    return " ".join(words)


def make_texts(voice, n: int, seed: int, words: list[str]) -> list[str]:
    """``n`` texts for ``voice``; English voices get a few fixed phonetically rich sentences."""
    rng = np.random.default_rng(seed)
    if voice.language == "english":
        texts = [english_sentence(rng, words) for _ in range(n)]
        k = min(len(RICH_SENTENCES), n // 5)
        for i, j in enumerate(rng.choice(len(RICH_SENTENCES), size=k, replace=False)):
            texts[i * 5] = RICH_SENTENCES[int(j)]
        return texts
    return [foreign_sentence(rng, voice.language) for _ in range(n)]
