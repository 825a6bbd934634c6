"""``lipstream train DATA_DIR --out RUN``: train the G4G generator on talking videos.

One step: a batch of ``--batch`` windows of five consecutive frames (``data.G4GDataset``) goes
through the generator as ``5 x batch`` frames; the generator minimises the weighted sum of the
§3.3 losses (``losses.WEIGHTS``): the multi-scale masked L1, the two-scale perceptual loss, the
facial-attribute cosine, the inter-modal contrastive loss, LS-GAN on single frames and on the
5-frame windows, and with ``--sync`` the frozen expert's sync loss; then both discriminators take
one LS-GAN step.  Every ``--val-every`` steps the held-out speakers' fixed windows are scored (L1
and PSNR of the whole face and of the mouth region, against copying a reference frame), a PNG
grid is written and ``RUN/checkpoint.pt`` is replaced atomically (format ``lipstream-g4g``; it
holds the optimiser and discriminator states, so ``--resume`` continues the step count).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.g4g import data as gdata
from export.g4g import losses as L
from export.g4g.checkpoints import CHECKPOINT, JsonLog, load_checkpoint, pick_device, save_atomic, save_grid
from export.g4g.config import G4GConfig, preset
from export.g4g.faces import mouth_region
from export.g4g.model import G4G

log = logging.getLogger(__name__)

FORMAT = "lipstream-g4g"
VERSION = 1
N_VAL_WINDOWS = 12

Progress = Callable[[int, int], None]


@dataclass
class State:
    """Everything a step changes: the generator, the two discriminators, their optimisers."""

    model: G4G
    d_frame: L.FrameDiscriminator
    d_window: L.WindowDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0


def _new_state(cfg: G4GConfig, lr: float, device: torch.device) -> State:
    model = G4G(cfg).to(device)
    width = max(16, cfg.channels // 4)
    d_frame, d_window = L.FrameDiscriminator(width).to(device), L.WindowDiscriminator(width).to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_frame.parameters()) + list(d_window.parameters()), lr=lr, betas=(0.5, 0.999))
    return State(model, d_frame, d_window, opt_g, opt_d)


def _load_state(args: argparse.Namespace, cfg: G4GConfig, device: torch.device) -> State:
    state = _new_state(cfg, args.lr, device)
    path = Path(args.out) / CHECKPOINT
    if path.is_file() and not args.resume:
        raise ValueError(f"{path} exists; pass --resume to continue it or choose another --out")
    if not (args.resume and path.is_file()):
        return state
    ck = load_checkpoint(path, FORMAT)
    if G4GConfig.from_dict(ck["config"]) != cfg:
        raise ValueError(f"{path} holds a {ck['config']} model; --config {args.config} differs")
    state.model.load_state_dict(ck["generator"])
    state.d_frame.load_state_dict(ck["d_frame"])
    state.d_window.load_state_dict(ck["d_window"])
    state.opt_g.load_state_dict(ck["opt_g"])
    state.opt_d.load_state_dict(ck["opt_d"])
    state.step = int(ck["step"])
    log.info("resuming %s at step %d", path, state.step)
    return state


def _tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, 5, ...) -> (5B, ...)."""
    return x.flatten(0, 1)


def generator_losses(state: State, b: dict[str, torch.Tensor], perceptual: L.Perceptual,
                     expert: nn.Module | None, gan_on: bool) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """(weighted total, each term as a float, the generated faces (B, 5, 3, S, S))."""
    model, cfg = state.model, state.model.cfg
    n, t = b["target"].shape[:2]
    out = model(_flat(b["source"]), _flat(b["refs"]), _flat(b["prior"]), _flat(b["mel"]))
    target = _flat(b["target"])
    terms = {"l1": L.masked_l1(out.face, out.decoded, target, out.deform_masks),
             "perceptual": perceptual(out.face, target),
             "attribute": L.attribute_loss(model, out.face, target),
             "contrastive": G4G.contrastive_loss(out.visual_emb, out.audio_emb, cfg.temperature)}
    faces5 = out.face.view(n, t, *out.face.shape[1:])
    if gan_on:
        terms["gan_frame"] = L.lsgan_g(state.d_frame(out.face))
        terms["gan_window"] = L.lsgan_g(state.d_window(faces5))
    if expert is not None:
        terms["sync"] = L.sync_loss(expert, faces5, b["mel"][:, gdata.WINDOW // 2])
    total = sum(L.WEIGHTS[k] * v for k, v in terms.items())
    return total, {k: v.item() for k, v in terms.items()}, faces5


def discriminator_step(state: State, real5: torch.Tensor, fake5: torch.Tensor) -> float:
    """One LS-GAN step of both discriminators on real and (detached) generated faces."""
    fake5 = fake5.detach()
    loss = (L.lsgan_d(state.d_frame(_flat(real5)), state.d_frame(_flat(fake5)))
            + L.lsgan_d(state.d_window(real5), state.d_window(fake5)))
    state.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    state.opt_d.step()
    return loss.item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (B,)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def score(pred: torch.Tensor, target: torch.Tensor, size: int) -> dict[str, float]:
    """L1 and PSNR of the whole face and of the mouth region (``faces.mouth_region``)."""
    rows, cols = mouth_region(size)
    pm, tm = pred[..., rows, cols], target[..., rows, cols]
    return {"l1": (pred - target).abs().mean().item(), "psnr": psnr(pred, target).mean().item(),
            "mouth_l1": (pm - tm).abs().mean().item(), "mouth_psnr": psnr(pm, tm).mean().item()}


def validation_batch(ds: gdata.G4GDataset, n: int = N_VAL_WINDOWS) -> dict[str, np.ndarray]:
    """``n`` fixed windows spread over the validation set (same references every time)."""
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    return ds.batch(idx)


def validate(model: G4G, vb: dict[str, torch.Tensor]) -> tuple[dict[str, float], torch.Tensor]:
    """The model's figures and the copy-the-first-reference baseline's on a validation batch."""
    model.eval()
    with torch.no_grad():
        face = model(_flat(vb["source"]), _flat(vb["refs"]), _flat(vb["prior"]), _flat(vb["mel"])).face
    model.train()
    target, size = _flat(vb["target"]), model.cfg.size
    figures = {f"val_{k}": v for k, v in score(face, target, size).items()}
    figures.update({f"copy_ref_{k}": v for k, v in score(_flat(vb["refs"])[:, :3], target, size).items()})
    return figures, face


def _checkpoint(state: State, cfg: G4GConfig, info: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "generator": state.model.state_dict(),
            "step": state.step, "d_frame": state.d_frame.state_dict(), "d_window": state.d_window.state_dict(),
            "opt_g": state.opt_g.state_dict(), "opt_d": state.opt_d.state_dict(), "train_info": info}


def _sample_grid(vb: dict[str, torch.Tensor], face: torch.Tensor, path: Path, k: int = 6) -> None:
    """Rows: masked source, first reference, landmark prior, ground truth, output (k validation frames)."""
    k = min(k, len(face))
    save_grid([_flat(vb["source"])[:k], _flat(vb["refs"])[:k, :3], _flat(vb["prior"])[:k],
               _flat(vb["target"])[:k], face[:k]], path)


def _setup(args: argparse.Namespace, data_progress: Progress | None):  # noqa: ANN202 - internal tuple
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg, run = preset(args.config), Path(args.out)
    clips = gdata.prepare_dataset(args.data_dir, cfg.size, args.cache or run / "data-cache", data_progress)
    train_r, val_r, how = gdata.split_by_speaker(clips)
    log.info("G4G split %s", how)
    train_ds = gdata.G4GDataset(clips, train_r, cfg.n_refs, cfg.mask_from, random_refs=True, seed=args.seed)
    val_ds = gdata.G4GDataset(clips, val_r, cfg.n_refs, cfg.mask_from, random_refs=False)
    return cfg, run, train_ds, val_ds, how


def run_train(args: argparse.Namespace, data_progress: Progress | None = None,
              step_progress: Progress | None = None) -> dict:
    """Train (or resume) to ``args.steps`` steps; returns the last validation figures."""
    cfg, run, train_ds, val_ds, how = _setup(args, data_progress)
    device = pick_device(args.device)
    state = _load_state(args, cfg, device)
    perceptual = L.Perceptual(args.vgg19).to(device)
    from export.g4g.syncnet import load_expert

    expert = load_expert(args.sync, device) if args.sync else None
    if expert is None:
        log.info("no --sync expert: the sync loss is off")
    info = {"data_dir": str(args.data_dir), "split": how, "lookahead_s": gdata.LOOKAHEAD_S, "fps": gdata.FPS,
            "perceptual": perceptual.kind, "weights": dict(L.WEIGHTS), "sync": str(args.sync) if args.sync else None,
            "batch": args.batch, "lr": args.lr, "device": str(device)}
    vb = _tensors(validation_batch(val_ds), device)
    rng = np.random.default_rng(args.seed + state.step)
    jlog, t0, figures = JsonLog(run), time.perf_counter(), {}
    (run / "samples").mkdir(parents=True, exist_ok=True)
    start, recent = state.step, []
    if state.step == 0:  # the untrained model's figures: what training has to improve on
        jlog.write(**{"step": 0, **validate(state.model, vb)[0]})
    while state.step < args.steps:
        b = _tensors(train_ds.batch(rng.integers(len(train_ds), size=args.batch)), device)
        gan_on = state.step >= args.gan_start
        total, terms, fake5 = generator_losses(state, b, perceptual, expert, gan_on)
        state.opt_g.zero_grad(set_to_none=True)
        total.backward()
        state.opt_g.step()
        d_loss = discriminator_step(state, b["target"], fake5) if gan_on else None
        state.step += 1
        recent = (recent + [total.item()])[-10:]
        if state.step % 10 == 0 or state.step == args.steps:
            jlog.write(step=state.step, loss=total.item(), loss_avg10=float(np.mean(recent)), d_loss=d_loss, **terms)
        if step_progress is not None:
            step_progress(state.step - start, args.steps - start)
        last = state.step == args.steps
        if state.step % args.val_every == 0 or last:
            figures, face = validate(state.model, vb)
            figures = {"step": state.step, "loss": total.item(), **figures}
            jlog.write(**figures)
            info.update(step=state.step, last_validation=figures)
            save_atomic(_checkpoint(state, cfg, info), run / CHECKPOINT)
            _sample_grid(vb, face, run / "samples" / f"step_{state.step:06d}.png")
            log.info("step %d: loss %.4f, val mouth PSNR %.2f dB (copy-reference %.2f), %.0f s", state.step,
                     total.item(), figures["val_mouth_psnr"], figures["copy_ref_mouth_psnr"], time.perf_counter() - t0)
    if not figures:  # nothing left to train (resumed at --steps)
        figures = {"step": state.step, **validate(state.model, vb)[0]}
    return figures
