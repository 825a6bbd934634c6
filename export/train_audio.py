"""Train the audio-to-mouth net on aligned synthetic speech, through the serving path's windows.

Pipeline: synthesize the training voices (``export.speech_corpus``, cached) -> per voice, a clean
copy and ``--copies`` degraded copies (``export.augment``: speed, room, mic response, noise, level;
drawn per utterance) -> ``engines.mel.melspectrogram`` of each stream (cached in ``data/speech/mels``) -> for every mel frame end
``e`` the window ``engines.windows.windows_at(mel, [e])`` and the coarticulated phone target at the
frame time that window serves, ``(e - 1)/80 - lookahead`` -> Adam.

All streams are laid end to end in one mel array separated by 16 frames of ``SILENCE_VALUE``,
which is exactly what ``windows_at`` reads outside a stream, so one gather serves a whole batch.

    python -m export.train_audio               # corpus + training, ~35 min on 2 cores (docs/model-card.md)
    python -m export.train_audio --steps 200 --utts 4 --out /tmp/a.pt   # smoke run
"""

from __future__ import annotations

import argparse
import os
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


def make_stream(mel: np.ndarray, seg: Segments, name: str, lookahead_s: float = LOOKAHEAD_S,
                targets: dict | None = None) -> Stream:
    """``mel`` with the target for every window end (the frame time that window serves)."""
    times = (np.arange(mel.shape[1] + 1) - 1) / MEL_FPS - lookahead_s
    return Stream(mel, target_track(seg, times, **(targets or TARGETS)), name)


def _cache_key(path: Path, copies: int, seed: int) -> str:
    """What the degraded mels depend on: the voice file, the seed, the augmentation and mel code."""
    import hashlib

    h = hashlib.sha1()
    st = path.stat()
    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{copies}:{seed}".encode())
    for mod in (augment, sys.modules[melspectrogram.__module__]):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


def _degraded_mels(path: Path, copies: int, seed: int,
                   cache_dir: Path | None) -> list[tuple[str, np.ndarray, Segments]]:
    """Mel and phone segments of the clean copy and each degraded copy of one voice, cached.

    The augmentation (room, noise, the Opus round trip) is most of a run's data time and does not
    depend on the targets or the lookahead, so recipes that differ only in those reuse it.
    """
    cache = cache_dir / f"{path.stem}-{_cache_key(path, copies, seed)}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        out = []
        for c in range(copies + 1):
            seg = Segments(z[f"s{c}"], z[f"e{c}"], [str(x) for x in z[f"p{c}"]], str(z["phoneset"]))
            out.append((str(z[f"n{c}"]), z[f"m{c}"], seg))
        return out
    v = load_voice(path)
    out = []
    for c in range(copies + 1):
        rng = np.random.default_rng([seed, c, sum(map(ord, v.name))])
        # copy 0: studio-clean speech at a random level over a faint noise floor
        wav, seg = degrade_utterances(v.wav, v.seg, v.utt_start, rng, 0.0 if c == 0 else 1.0)
        out.append((f"{v.name}#{c}", melspectrogram(wav), seg))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"phoneset": out[0][2].phoneset}
        for c, (name, mel, seg) in enumerate(out):
            arrays.update({f"n{c}": name, f"m{c}": mel, f"s{c}": seg.start, f"e{c}": seg.end,
                           f"p{c}": np.asarray(seg.phone)})
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # two runs may build the same voice
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    return out


def _voice_streams(args: tuple[Path, int, int, float, dict, Path | None]) -> list[Stream]:
    path, copies, seed, lookahead_s, targets, cache_dir = args
    return [make_stream(mel, seg, name, lookahead_s, targets)
            for name, mel, seg in _degraded_mels(path, copies, seed, cache_dir)]


def build_streams(paths: list[Path], copies: int, seed: int, workers: int = 2,
                  lookahead_s: float = LOOKAHEAD_S, targets: dict | None = None,
                  cache_dir: Path | None = None) -> list[Stream]:
    """Clean + degraded streams of every voice file, built over at most 2 processes.

    ``cache_dir``: keep each voice's degraded mels there (``train_audio`` uses ``data/speech/mels``).
    """
    jobs = [(p, copies, seed, lookahead_s, targets or TARGETS, cache_dir) for p in paths]
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


# Mel frames between a window and the one a video frame earlier (80 / 25 = 3.2, rounded down).
FRAME_STEP = int(MEL_FPS // 25)


def paired_indices(ds: Dataset, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` window indices, the index of the window a video frame earlier, and whether both lie
    in the same stream (pairs that straddle the silence between two streams are masked out)."""
    cur = rng.integers(FRAME_STEP, ds.ends.size, n)
    prev = cur - FRAME_STEP
    return cur, prev, ds.ends[cur] - ds.ends[prev] == FRAME_STEP


def delta_loss(eff, eff_t, same):  # noqa: ANN001, ANN201 - torch tensors, torch imported lazily
    """Mean |predicted change - target change| over the pairs in one stream.

    ``eff``/``eff_t``: predicted and target effective opening of ``2h`` windows, the first ``h``
    the current windows, the last ``h`` the windows a video frame earlier; ``same`` (h,) bool.
    An offset between prediction and target costs nothing here (the level losses see it).
    """
    h = eff.shape[0] // 2
    err = ((eff[:h] - eff[h:]) - (eff_t[:h] - eff_t[h:])).abs()
    return (err * same).sum() / same.sum().clamp(min=1)


def train(ds: Dataset, steps: int, batch: int, lr: float, seed: int, log_every: int = 250,
          max_minutes: float | None = None, channels: tuple[int, ...] = (24, 48, 72, 96),
          hidden: int = 96, delta_weight: float = 0.0):
    """Adam on Huber(open, width) + L1(effective opening) + weighted BCE(closure).

    ``delta_weight`` > 0 adds an L1 loss on the frame-to-frame change of the effective opening
    (a window and the one a video frame earlier, same stream) against the targets' change: the
    net stays stateless, but learns to move as much as its targets do and no more, which is the
    flicker the served mouth showed on real speech. Half of each batch is then those earlier
    windows, so a step costs the same.

    Returns the eval-mode model and a summary dict (``losses``: the loss of every step).
    """
    import torch
    from torch.nn import functional as F

    from export.audio_net import AudioToMouth

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AudioToMouth(tuple(channels), hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    pos = float(np.mean(ds.targets[:, 2] > 0.5))
    pos_weight = torch.tensor(min(6.0, (1 - pos) / max(pos, 1e-3)))
    paired = delta_weight > 0
    t0, run, losses = time.time(), 0.0, []
    for step in range(1, steps + 1):
        if paired:
            cur, prev, same_np = paired_indices(ds, batch // 2, rng)
            same = torch.from_numpy(same_np)
            idx = np.concatenate([cur, prev])
        else:
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
        if paired:
            loss = loss + delta_weight * delta_loss(eff, eff_t, same)
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
                          "losses": losses, "delta_weight": delta_weight}


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
    ap.add_argument("--channels", default="24,48,72,96",
                    help="conv channels of the net's four layers, comma-separated (stored in the checkpoint)")
    ap.add_argument("--hidden", type=int, default=96, help="width of the net's hidden linear layer")
    ap.add_argument("--delta-weight", type=float, default=1.0,
                    help="weight of the loss on the frame-to-frame change against the targets' (0 = off)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--no-mel-cache", action="store_true",
                    help="rebuild the degraded mels instead of reusing DATA_DIR/mels")
    a = ap.parse_args(argv)

    import torch

    from export import audio_net

    torch.set_num_threads(a.threads)
    t_start = time.time()
    paths = generate(a.data_dir, "train", a.utts, a.utts_foreign, a.seed, a.workers,
                     n_recorded=a.utts_recorded)
    t_corpus = time.time() - t_start
    targets = {"anticipation_s": a.anticipation, "carryover_s": a.carryover, "jaw_coupling": a.jaw_coupling}
    streams = build_streams(paths, a.copies, a.seed, a.workers, a.lookahead, targets,
                            cache_dir=None if a.no_mel_cache else a.data_dir / "mels")
    ds = concat_streams(streams)
    minutes = sum(s.mel.shape[1] for s in streams if s.name.endswith("#0")) / MEL_FPS / 60
    print(f"[data] {len(streams)} streams, {minutes:.1f} min of clean speech+pauses, "
          f"{ds.ends.size} windows ({time.time() - t_start:.0f} s)", flush=True)
    channels = tuple(int(c) for c in a.channels.split(","))
    if len(channels) != 4:
        ap.error(f"--channels needs four comma-separated sizes, got {a.channels!r}")
    model, info = train(ds, a.steps, a.batch, a.lr, a.seed, max_minutes=a.max_minutes,
                        channels=channels, hidden=a.hidden, delta_weight=a.delta_weight)
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
