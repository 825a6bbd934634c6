"""Train the audio-to-mouth net on aligned synthetic speech, through the serving path's windows.

Pipeline: synthesize the training voices (``export.speech_corpus``, cached) -> per voice, a clean
copy and ``--copies`` degraded copies (``export.augment``: speed, room, mic response, noise, level;
drawn per utterance) -> ``engines.mel.melspectrogram`` of each stream -> for every mel frame end
``e`` the window ``engines.windows.windows_at(mel, [e])`` and the coarticulated phone target at the
frame time that window serves, ``(e - 1)/80 - lookahead`` -> Adam.

All streams are laid end to end in one mel array separated by 16 frames of ``SILENCE_VALUE``,
which is exactly what ``windows_at`` reads outside a stream, so one gather serves a whole batch.

    python -m export.train_audio               # corpus + training, ~12 min on 2 cores
    python -m export.train_audio --steps 200 --utts 4 --out /tmp/a.pt   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import augment
from export.phonemes import Segments, target_track
from export.speech_corpus import DEFAULT_DATA_DIR, generate, load_voice
from engines.mel import MEL_FPS, SAMPLE_RATE, SILENCE_VALUE, melspectrogram
from engines.windows import WINDOW, windows_at

LOOKAHEAD_S = 0.04  # must equal export.audio_net.LOOKAHEAD_S (kept torch-free here; test checks)


@dataclass
class Stream:
    """One (possibly degraded) speech signal turned into training material."""

    mel: np.ndarray  # (80, T) float32
    targets: np.ndarray  # (T + 1, 3): target for the window ending at mel index e (e = 0..T)
    name: str


def degrade_utterances(wav: np.ndarray, seg: Segments, utt_start: np.ndarray,
                       rng: np.random.Generator, strength: float) -> tuple[np.ndarray, Segments]:
    """Degrade each utterance with its own random chain; phone times follow any speed change."""
    bounds = list(utt_start) + [wav.size]
    out_wavs, s_all, e_all, p_all = [], [], [], []
    t_out = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        d = augment.draw(rng, strength)
        y = augment.apply(wav[a:b], d, rng)
        t0, t1 = a / SAMPLE_RATE, b / SAMPLE_RATE
        sel = (seg.end > t0 + 1e-6) & (seg.start < t1 - 1e-6)
        s = (np.maximum(seg.start[sel], t0) - t0) / d.speed + t_out
        e = (np.minimum(seg.end[sel], t1) - t0) / d.speed + t_out
        s_all.append(s)
        e_all.append(e)
        p_all += [p for p, k in zip(seg.phone, sel) if k]
        out_wavs.append(y)
        t_out += y.size / SAMPLE_RATE
    return (np.concatenate(out_wavs),
            Segments(np.concatenate(s_all), np.concatenate(e_all), p_all, seg.phoneset))


# The training targets' shape (``export.phonemes.target_track``): how far they lead and trail the
# phones, and how much a tongue-only consonant keeps of its vowels' opening.
TARGETS = {"anticipation_s": 0.08, "carryover_s": 0.05, "jaw_coupling": 0.5}


def make_stream(wav: np.ndarray, seg: Segments, name: str, lookahead_s: float = LOOKAHEAD_S,
                targets: dict | None = None) -> Stream:
    """Mel of ``wav`` and the target for every window end (the frame time it serves)."""
    mel = melspectrogram(wav)
    ends = np.arange(mel.shape[1] + 1)
    times = (ends - 1) / MEL_FPS - lookahead_s
    return Stream(mel, target_track(seg, times, **(targets or TARGETS)), name)


def _voice_streams(args: tuple[Path, int, int, float, dict]) -> list[Stream]:
    path, copies, seed, lookahead_s, targets = args
    v = load_voice(path)
    out = []
    for c in range(copies + 1):
        rng = np.random.default_rng([seed, c, sum(map(ord, v.name))])
        # copy 0: studio-clean speech at a random level over a faint noise floor
        wav, seg = degrade_utterances(v.wav, v.seg, v.utt_start, rng, 0.0 if c == 0 else 1.0)
        out.append(make_stream(wav, seg, f"{v.name}#{c}", lookahead_s, targets))
    return out


def build_streams(paths: list[Path], copies: int, seed: int, workers: int = 2,
                  lookahead_s: float = LOOKAHEAD_S, targets: dict | None = None) -> list[Stream]:
    """Clean + degraded streams of every voice file, built over at most 2 processes."""
    jobs = [(p, copies, seed, lookahead_s, targets or TARGETS) for p in paths]
    if workers <= 1:
        return [s for j in jobs for s in _voice_streams(j)]
    with ProcessPoolExecutor(max_workers=min(workers, 2)) as ex:
        return [s for ss in ex.map(_voice_streams, jobs) for s in ss]


@dataclass
class Dataset:
    """All streams in one mel array; ``ends`` are the valid window ends, ``targets`` per end."""

    mel: np.ndarray  # (80, N)
    ends: np.ndarray  # (M,) int64 global window ends
    targets: np.ndarray  # (M, 3)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows (B, 1, 80, 16) through the serving path's gather, and their targets."""
        return windows_at(self.mel, self.ends[idx]), self.targets[idx]


def concat_streams(streams: list[Stream]) -> Dataset:
    """Lay streams end to end with WINDOW frames of silence between them."""
    gap = np.full((streams[0].mel.shape[0], WINDOW), SILENCE_VALUE, np.float32)
    mels, ends, tg = [], [], []
    off = 0
    for s in streams:
        t = s.mel.shape[1]
        mels += [s.mel, gap]
        ends.append(off + np.arange(1, t + 1))
        tg.append(s.targets[1: t + 1])
        off += t + WINDOW
    return Dataset(np.concatenate(mels, axis=1), np.concatenate(ends), np.concatenate(tg).astype(np.float32))


def train(ds: Dataset, steps: int, batch: int, lr: float, seed: int, log_every: int = 250,
          max_minutes: float | None = None):
    """Adam on Huber(open, width) + L1(effective opening) + weighted BCE(closure).

    Returns the eval-mode model and a summary dict (``losses``: the loss of every step).
    """
    import torch
    from torch.nn import functional as F

    from export.audio_net import AudioToMouth

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AudioToMouth()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    pos = float(np.mean(ds.targets[:, 2] > 0.5))
    pos_weight = torch.tensor(min(6.0, (1 - pos) / max(pos, 1e-3)))
    t0, run, losses = time.time(), 0.0, []
    for step in range(1, steps + 1):
        idx = rng.integers(0, ds.ends.size, batch)
        x, y = ds.batch(idx)
        x = torch.from_numpy(x)
        y = torch.from_numpy(y)
        z = model.logits(x)
        op, wd, cl = torch.sigmoid(z[:, 0]), torch.tanh(z[:, 1]), torch.sigmoid(z[:, 2])
        eff, eff_t = op * (1 - cl), y[:, 0] * (1 - y[:, 2])
        loss = (F.smooth_l1_loss(op, y[:, 0], beta=0.1) + 0.5 * F.smooth_l1_loss(wd, y[:, 1], beta=0.1)
                + F.l1_loss(eff, eff_t)
                + F.binary_cross_entropy_with_logits(z[:, 2], y[:, 2], pos_weight=pos_weight))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        run = losses[-1] if step == 1 else 0.98 * run + 0.02 * losses[-1]
        if step % log_every == 0 or step == steps:
            print(f"[train] step {step}/{steps} loss {run:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if max_minutes and time.time() - t0 > max_minutes * 60:
            print(f"[train] time cap reached at step {step}", flush=True)
            break
    return model.eval(), {"steps": step, "final_loss": run, "seconds": round(time.time() - t0),
                          "losses": losses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--utts", type=int, default=120, help="utterances per English voice")
    ap.add_argument("--utts-foreign", type=int, default=60, help="utterances per other-language voice")
    ap.add_argument("--utts-recorded", type=int, default=None,
                    help="recorded (real) prompts to train on (default 5 x --utts-foreign)")
    ap.add_argument("--copies", type=int, default=2, help="degraded copies per voice (plus one clean)")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    ap.add_argument("--out", type=Path, default=None, help="weights path (default: the committed one)")
    ap.add_argument("--lookahead", type=float, default=LOOKAHEAD_S,
                    help="seconds the window reaches past the frame time (stored in the checkpoint)")
    ap.add_argument("--anticipation", type=float, default=TARGETS["anticipation_s"],
                    help="seconds the open/width targets lead the phones")
    ap.add_argument("--carryover", type=float, default=TARGETS["carryover_s"],
                    help="seconds the open/width targets trail the phones")
    ap.add_argument("--jaw-coupling", type=float, default=TARGETS["jaw_coupling"],
                    help="share of the neighbouring vowels' opening a tongue-only consonant keeps")
    a = ap.parse_args(argv)

    import torch

    from export import audio_net

    torch.set_num_threads(2)
    t_start = time.time()
    paths = generate(a.data_dir, "train", a.utts, a.utts_foreign, a.seed, a.workers,
                     n_recorded=a.utts_recorded)
    t_corpus = time.time() - t_start
    targets = {"anticipation_s": a.anticipation, "carryover_s": a.carryover, "jaw_coupling": a.jaw_coupling}
    streams = build_streams(paths, a.copies, a.seed, a.workers, a.lookahead, targets)
    ds = concat_streams(streams)
    minutes = sum(s.mel.shape[1] for s in streams if s.name.endswith("#0")) / MEL_FPS / 60
    print(f"[data] {len(streams)} streams, {minutes:.1f} min of clean speech+pauses, "
          f"{ds.ends.size} windows ({time.time() - t_start:.0f} s)", flush=True)
    model, info = train(ds, a.steps, a.batch, a.lr, a.seed, max_minutes=a.max_minutes)
    info.pop("losses")
    info.update({"voices": sorted({s.name.split("#")[0] for s in streams}), "clean_minutes": round(minutes, 1),
                 "copies": a.copies, "utts": a.utts, "utts_foreign": a.utts_foreign,
                 "utts_recorded": a.utts_recorded, "seed": a.seed,
                 "batch": a.batch, "lr": a.lr, "targets": targets, "corpus_seconds": round(t_corpus),
                 "total_seconds": round(time.time() - t_start)})
    out = audio_net.save(model, a.out or audio_net.WEIGHTS_PATH, info, lookahead_s=a.lookahead)
    print(f"[done] wrote {out} in {time.time() - t_start:.0f} s total", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
