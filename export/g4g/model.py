"""The G4G generator (arXiv 2402.18122, §3) as one ``nn.Module``, split for serving.

Per avatar frame, once (``prepare``, audio-independent, cached as the avatar's features):
Es encodes the lower-half-masked source frame, Er the ``n_refs`` stacked reference frames, and the
landmark prior goes through Es too; the intra-modal alignment fuses source and reference top
features and AdaIN-aligns them to the landmark feature (``align.py``); Er's S/2 and S levels give
the decoder's reference skips (``parts.ReferenceSkips``; the S skip carries the first reference's
RGB), so the reference's texture can reach the face.

Per live frame (``step``): Ea encodes the 16x80 mel window; the audio feature and the cached
aligned visual feature predict a per-channel affine warp of the reference feature (``deform.py``),
and the same per-channel matrices warp the skips (skip channel k moves with reference channel k;
the matrices are in grid units, so one matrix means the same motion at every scale); the decoder
turns the deformed reference, the source feature and the aligned visual map into a
face; it is composited over the masked source with a Gaussian-smoothed lower-face mask, and the
blend net fuses and amends the composite into the final face.  Decoder and blend net start as the
identity on their image input (``parts`` docstring): an untrained G4G returns the source's upper
face and the first reference's mouth, and training amends that.

Training (``forward``) runs both halves and also returns the L2-normalised aligned embeddings for
the inter-modal contrastive loss (``G4G.contrastive_loss``) and the multi-scale masks for the
masked L1.  ``forward(...).face == step(mel, **prepare(...))`` by construction (same code path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from export.g4g import align
from export.g4g.align import InterAlign, IntraAlign
from export.g4g.config import G4GConfig
from export.g4g.deform import ChannelAffineWarp, DeformParams, Masks, affine_matrices
from export.g4g.parts import AudioEncoder, BlendNet, Decoder, ImageEncoder, ReferenceSkips, init_weights, \
    reference_widths, skip_widths, source_widths

__all__ = ["G4G", "G4GOutput"]


@dataclass
class G4GOutput:
    """Everything the G4G losses need from one training forward pass (shapes for batch B)."""

    face: torch.Tensor  # (B, 3, S, S) final face after the blend net, RGB [0, 1]
    decoded: torch.Tensor  # (B, 3, S, S) the decoder's face before compositing
    composite: torch.Tensor  # (B, 3, S, S) decoded pasted over the masked source with face_mask
    face_mask: torch.Tensor  # (B, 1, S, S) Gaussian-smoothed lower-face mask
    deform_masks: list[torch.Tensor]  # [(B,1,S/4,S/4), (B,1,S/2,S/2), (B,1,S,S)] masked-L1 weights
    visual_emb: torch.Tensor  # (B, D) L2-normalised aligned visual embedding
    audio_emb: torch.Tensor  # (B, D) L2-normalised aligned audio embedding
    deform_params: torch.Tensor  # (B, C, 4) raw theta, log-scale, tx, ty (0 = identity), for regularisers


class G4G(nn.Module):
    """G4G generator; see the module docstring for the data flow and docs/g4g.md for shapes."""

    # avatar features (prepare outputs = step inputs), in the serving graph's table order ('ref' is
    # the built-in model's key in the engines: not used here)
    FEATURE_KEYS: tuple[str, ...] = ("reference", "skip_half", "skip_full", "src", "visual", "vis_vec", "source")

    def __init__(self, cfg: G4GConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or G4GConfig()
        c, d, s = cfg.channels, cfg.audio_dim, cfg.size
        self.es = ImageEncoder(3, source_widths(cfg))
        self.er = ImageEncoder(3 * cfg.n_refs, reference_widths(cfg))
        self.ea = AudioEncoder(d)
        self.intra = IntraAlign(c, d)
        self.inter = InterAlign(d)
        self.deform = DeformParams(d, c)
        self.warp = ChannelAffineWarp(s // 4, s // 4)
        self.skips = ReferenceSkips(cfg)
        self.warp2, self.warp1 = ChannelAffineWarp(s // 2, s // 2), ChannelAffineWarp(s, s)
        self.masks = Masks(s, cfg.mask_from)
        self.decoder = Decoder(cfg)
        self.blend = BlendNet(cfg)
        self.attr_head = nn.Linear(c, d)
        init_weights(self)
        self.deform.reset_identity()  # after init_weights: the warp starts as the identity
        for m in (self.skips, self.decoder, self.blend):
            m.reset_copy()  # ... and decoder and blend net as the identity on their image input

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per-frame (C, H, W) of every avatar feature, in FEATURE_KEYS order."""
        c, d, s = self.cfg.channels, self.cfg.audio_dim, self.cfg.size
        k2, k1 = skip_widths(self.cfg)
        return {"reference": (reference_widths(self.cfg)[1], s // 4, s // 4),
                "skip_half": (k2, s // 2, s // 2), "skip_full": (k1, s, s),
                "src": (source_widths(self.cfg)[1], s // 4, s // 4),
                "visual": (c, s // 8, s // 8), "vis_vec": (d, 1, 1), "source": (3, s, s)}

    def prepare(self, source_masked: torch.Tensor, refs: torch.Tensor, prior: torch.Tensor) -> dict[str, torch.Tensor]:
        """Audio-independent features of avatar frames: (B,3,S,S), (B,3*n_refs,S,S), (B,3,S,S) ->
        {key: (B, C_k, H_k, W_k)} (FEATURE_KEYS)."""
        _, src4, src8 = self.es(source_masked)
        ref1, ref2, ref4, ref8 = self.er.levels(refs)
        skip_half, skip_full = self.skips(ref1, ref2, refs[:, :3])
        landmark8 = self.es(prior)[2]
        visual, vis_vec = self.intra(src8, ref8, landmark8)
        return {"reference": ref4, "skip_half": skip_half, "skip_full": skip_full, "src": src4, "visual": visual, "vis_vec": vis_vec[:, :, None, None],
                "source": source_masked}

    def _step_parts(self, mel: torch.Tensor, reference: torch.Tensor, skip_half: torch.Tensor,
                    skip_full: torch.Tensor, src: torch.Tensor, visual: torch.Tensor, vis_vec: torch.Tensor,
                    source: torch.Tensor) -> dict[str, torch.Tensor | list]:
        audio = self.ea(mel)
        raw = self.deform(audio, vis_vec.flatten(1))
        mats = affine_matrices(raw)
        deformed = self.warp(reference, mats)
        skip2 = self.warp2(skip_half, mats[:, :skip_half.shape[1]])
        skip1 = self.warp1(skip_full, mats[:, :skip_full.shape[1]])
        masks, face_mask = self.masks(mel.shape[0])
        decoded = self.decoder(deformed, src, visual, masks, skip2, skip1)
        composite = face_mask * decoded + (1.0 - face_mask) * source
        face = self.blend(composite, decoded, source, face_mask)
        return {"face": face, "decoded": decoded, "composite": composite, "face_mask": face_mask,
                "deform_masks": masks, "audio": audio, "deform_params": raw}

    def step(self, mel: torch.Tensor, reference: torch.Tensor, skip_half: torch.Tensor, skip_full: torch.Tensor,
             src: torch.Tensor, visual: torch.Tensor, vis_vec: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """One live frame: mel (B,1,80,16) + cached features (FEATURE_KEYS order: the serving graph
        passes them positionally) -> the face (B,3,S,S), RGB [0,1]."""
        return self._step_parts(mel, reference, skip_half, skip_full, src, visual, vis_vec, source)["face"]

    def forward(self, source_masked: torch.Tensor, refs: torch.Tensor, prior: torch.Tensor,
                mel: torch.Tensor) -> G4GOutput:
        """Training pass: prepare + step, plus the aligned embeddings for the contrastive loss."""
        feats = self.prepare(source_masked, refs, prior)
        parts = self._step_parts(mel, **feats)
        visual_emb, audio_emb = self.inter(feats["vis_vec"].flatten(1), parts["audio"])
        return G4GOutput(face=parts["face"], decoded=parts["decoded"], composite=parts["composite"],
                         face_mask=parts["face_mask"], deform_masks=parts["deform_masks"],
                         visual_emb=visual_emb, audio_emb=audio_emb, deform_params=parts["deform_params"])

    def encode_attributes(self, face: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) face -> (B, D) facial-attribute embedding through Es (pooled top feature,
        projected), for the attribute cosine loss between the output and the ground truth."""
        return self.attr_head(self.es(face)[2].mean((2, 3)))

    @staticmethod
    def contrastive_loss(visual_emb: torch.Tensor, audio_emb: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
        """The paper's two-way diagonal-matrix contrastive loss (``align.contrastive_loss``)."""
        return align.contrastive_loss(visual_emb, audio_emb, temperature)
