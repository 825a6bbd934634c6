"""Filmed real speech: decode a clip, read the speaker's mouth off the video, align its phones.

The clips are real people filmed saying a sentence (the GRID corpus samples in ``tests/data/grid/``,
CC BY 4.0).  ``load_clip`` decodes frames and audio with PyAV on one time line;
``real_mouth_opening`` reads the inner-lip gap per frame with mediapipe's face mesh;
``align_phones`` force-aligns the known sentence with pocketsphinx (PyPI: its English acoustic
model, trained on real speech, ships in the wheel), and ``vad_segments`` stands in for it with
webrtcvad where pocketsphinx is missing.  ``export.real_speech_eval`` builds the scores on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.phonemes import Segments, is_silence
from engines.mel import SAMPLE_RATE

FACE_HEIGHT_MIN_PX = 60

# Inner-lip point pairs (upper, lower) on and beside the midline of mediapipe's mesh.
_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))

# GRID file names spell their sentence: command, colour, preposition, letter, digit, adverb.
_GRID_WORDS = (
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
    None,  # the letter itself
    {"z": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
     "7": "seven", "8": "eight", "9": "nine", "o": "zero"},
    {"a": "again", "n": "now", "p": "please", "s": "soon"},
)


def grid_sentence(name: str) -> str:
    """The sentence a GRID clip says, from its 6-character file stem (``brbk7n`` -> "bin red by k seven now")."""
    stem = Path(name).stem.lower()
    if len(stem) != 6:
        raise ValueError(f"{name!r} is not a GRID file name (6 characters, e.g. brbk7n)")
    return " ".join(stem[i] if table is None else table[stem[i]] for i, table in enumerate(_GRID_WORDS))


@dataclass
class Clip:
    """One filmed sentence: RGB frames at ``fps`` and its audio at 16 kHz, both starting at t = 0."""

    name: str
    frames: np.ndarray  # (n, H, W, 3) uint8
    fps: float
    wav: np.ndarray  # (samples,) float32, 16 kHz mono
    sentence: str


def load_clip(path: Path | str) -> Clip:
    """Decode a clip with PyAV; the audio is placed by its own timestamps relative to the video's."""
    import av
    import soxr

    path = Path(path)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "NONE"  # frame threading drops the first GOP of these MPEG-1 files
        frames, t_video = [], None
        for f in c.decode(vs):
            if t_video is None:
                t_video = float(f.pts * f.time_base)
            frames.append(f.to_ndarray(format="rgb24"))
        fps = float(vs.average_rate)
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        sr = st.codec_context.sample_rate
        chunks, t_audio = [], None
        for f in c.decode(st):
            if t_audio is None:
                t_audio = float(f.pts * f.time_base)
            a = f.to_ndarray()
            if a.dtype == np.int16:
                a = a.astype(np.float32) / 32768.0
            a = a.reshape(len(f.layout.channels), -1) if f.format.is_planar else a.reshape(-1, len(f.layout.channels)).T
            chunks.append(a.mean(axis=0).astype(np.float32))
    wav = soxr.resample(np.concatenate(chunks), sr, SAMPLE_RATE).astype(np.float32)
    shift = int(round(((t_audio or 0.0) - (t_video or 0.0)) * SAMPLE_RATE))
    wav = np.concatenate([np.zeros(shift, np.float32), wav]) if shift > 0 else wav[-shift:]
    try:
        sentence = grid_sentence(path.name)
    except (ValueError, KeyError):
        sentence = ""
    return Clip(path.stem, np.stack(frames), fps, wav, sentence)


def real_mouth_opening(frames: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face height per frame (n,); frames without a face are interpolated."""
    from export.landmarks import CHIN, FOREHEAD, FaceMesh

    out = np.full(len(frames), np.nan)
    with FaceMesh(video=True, max_faces=1) as mesh:
        for i, rgb in enumerate(frames):
            lm = mesh.detect(np.ascontiguousarray(rgb))
            if lm is None:
                continue
            h = float(np.linalg.norm(lm[CHIN] - lm[FOREHEAD]))
            if h < FACE_HEIGHT_MIN_PX:
                continue
            gap = np.mean([max(0.0, float(lm[lo, 1] - lm[up, 1])) for up, lo in _LIP_PAIRS])
            out[i] = gap / h
    ok = np.isfinite(out)
    if ok.sum() < max(3, len(out) // 2):
        raise RuntimeError(f"the face mesh found a face in only {ok.sum()} of {len(out)} frames")
    if not ok.all():
        idx = np.arange(len(out))
        out[~ok] = np.interp(idx[~ok], idx[ok], out[ok])
    return out


def align_phones(wav: np.ndarray, sentence: str) -> Segments | None:
    """Force-align ``sentence`` to ``wav`` with pocketsphinx -> CMU phone segments, or None."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    if not sentence:
        return None
    # The letter "a" is spoken as its name (EY), not the article (AH).
    words = ["a(2)" if w == "a" else w for w in sentence.lower().split()]
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
    try:
        d = Decoder(samprate=SAMPLE_RATE, lm=None, loglevel="FATAL")
        d.set_align_text(" ".join(words))
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()  # phone level: a second pass over the word alignment
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        al = d.get_alignment()
    except RuntimeError:
        return None
    if al is None:
        return None
    starts, ends, phones = [], [], []
    for word in al:
        for ph in word:
            starts.append(ph.start / 100.0)  # 10 ms frames
            ends.append((ph.start + ph.duration) / 100.0)
            phones.append(ph.name.lower())
    if not phones or all(is_silence(p) for p in phones):
        return None
    return Segments(np.asarray(starts), np.asarray(ends), phones, "cmu")


def vad_segments(wav: np.ndarray) -> Segments:
    """Speech/pause segments from webrtcvad (mode 2, 20 ms), for clips pocketsphinx cannot align."""
    import webrtcvad

    vad = webrtcvad.Vad(2)
    fl = int(0.02 * SAMPLE_RATE)
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
    flags = [vad.is_speech(pcm[i * fl:(i + 1) * fl].tobytes(), SAMPLE_RATE) for i in range(pcm.size // fl)]
    starts, ends, phones = [], [], []
    for i, f in enumerate(flags):
        lab = "ah" if f else "pau"
        if phones and phones[-1] == lab:
            ends[-1] = (i + 1) * 0.02
        else:
            starts.append(i * 0.02)
            ends.append((i + 1) * 0.02)
            phones.append(lab)
    return Segments(np.asarray(starts), np.asarray(ends), phones, "cmu")
