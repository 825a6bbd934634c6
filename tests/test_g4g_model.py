"""The G4G generator's parts, one by one: output shapes, gradient flow to every parameter, the
identity-initialised deformation, the copy-initialised decoder and blend net, the reference skips,
the contrastive loss, the masks, and prepare/step == forward."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="the G4G model needs torch (the [export] extra)")

from export.g4g import G4G, PRESETS, G4GConfig  # noqa: E402
from export.g4g import align, deform, parts  # noqa: E402

CFG = PRESETS["tiny"]
S, C, D = CFG.size, CFG.channels, CFG.audio_dim


def _inputs(b: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(b, 3, S, S, generator=g)
    src[:, :, CFG.mask_row:] = 0
    refs = torch.rand(b, 3 * CFG.n_refs, S, S, generator=g)
    prior = torch.rand(b, 3, S, S, generator=g)
    mel = torch.rand(b, 1, 80, 16, generator=g) * 8 - 4
    return src, refs, prior, mel


def _nudge_deformation(model: torch.nn.Module, seed: int = 1) -> None:
    """Leave the identity start: the zero last layer passes no gradient back until it moves."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, deform.DeformParams):
            with torch.no_grad():
                m.out.weight.copy_(torch.randn(m.out.weight.shape, generator=g) * 0.05)


def _assert_every_parameter_learns(module: torch.nn.Module, loss: torch.Tensor) -> None:
    module.zero_grad()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"


def _one_optimiser_step(module: torch.nn.Module, loss: torch.Tensor) -> None:
    """Leave the copy start: its zero output weights pass no gradient upstream until they move."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _weighted_sum(*outs: torch.Tensor) -> torch.Tensor:
    """A loss that reaches every output element with a different weight (no symmetric cancelling)."""
    g = torch.Generator().manual_seed(7)
    return sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)


def test_image_encoders_shapes_and_gradients() -> None:
    for cin, widths in ((3, parts.source_widths(CFG)), (3 * CFG.n_refs, parts.reference_widths(CFG))):
        enc = parts.ImageEncoder(cin, widths)
        outs = enc(torch.rand(2, cin, S, S))
        assert [tuple(o.shape) for o in outs] == [(2, widths[0], S // 2, S // 2), (2, widths[1], S // 4, S // 4),
                                                  (2, widths[2], S // 8, S // 8)]
        _assert_every_parameter_learns(enc, _weighted_sum(*outs))
    assert parts.reference_widths(CFG)[1] == C  # the deformed reference feature has C channels


def test_audio_encoder_shapes_and_gradients() -> None:
    ea = parts.AudioEncoder(D)
    out = ea(torch.rand(4, 1, 80, 16) * 8 - 4)
    assert out.shape == (4, D)
    _assert_every_parameter_learns(ea, _weighted_sum(out))


def test_adain_takes_the_landmark_statistics() -> None:
    x, y = torch.randn(2, 5, 6, 6) * 3 + 1, torch.randn(2, 5, 6, 6) * 0.5 - 2
    out = align.adain(x, y)
    torch.testing.assert_close(out.mean((2, 3)), y.mean((2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), y.std((2, 3), unbiased=False), atol=1e-3, rtol=1e-3)


def test_intra_alignment_shapes_and_gradients() -> None:
    intra = align.IntraAlign(C, D)
    f = [torch.randn(2, C, S // 8, S // 8) for _ in range(3)]
    visual, vec = intra(*f)
    assert visual.shape == (2, C, S // 8, S // 8) and vec.shape == (2, D)
    _assert_every_parameter_learns(intra, _weighted_sum(visual, vec))
    fusion = align.Conv1dFusion(C)
    assert isinstance(fusion.conv, torch.nn.Conv1d) and fusion(f[0], f[1]).shape == f[0].shape


def test_inter_alignment_embeddings_are_unit_and_learn() -> None:
    inter = align.InterAlign(D)
    v, a = inter(torch.randn(4, D), torch.randn(4, D))
    assert v.shape == a.shape == (4, D)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4)), torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    _assert_every_parameter_learns(inter, G4G.contrastive_loss(v, a, CFG.temperature))


def test_contrastive_loss_is_lower_for_matched_pairs() -> None:
    g = torch.Generator().manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(8, D, generator=g), dim=1)
    a = torch.nn.functional.normalize(v + 0.3 * torch.randn(8, D, generator=g), dim=1)
    shuffled = a[torch.roll(torch.arange(8), 1)]
    matched, wrong = G4G.contrastive_loss(v, a, 0.07), G4G.contrastive_loss(v, shuffled, 0.07)
    assert matched < 0.5 * wrong, (matched, wrong)
    # two-way: both directions count, so swapping the roles gives the same value
    torch.testing.assert_close(G4G.contrastive_loss(a, v, 0.07), matched)
    # uniform scores (all embeddings equal) give log(B) exactly
    same = torch.nn.functional.normalize(torch.ones(8, D), dim=1)
    assert G4G.contrastive_loss(same, same, 0.07).item() == pytest.approx(math.log(8), abs=1e-5)


def test_deformation_starts_as_the_identity() -> None:
    model = G4G(CFG).eval()
    src, refs, prior, mel = _inputs()
    with torch.no_grad():
        feats = model.prepare(src, refs, prior)
        raw = model.deform(model.ea(mel), feats["vis_vec"].flatten(1))
        warped = model.warp(feats["reference"], deform.affine_matrices(raw))
    assert raw.shape == (3, C, 4) and raw.abs().max() == 0
    torch.testing.assert_close(warped, feats["reference"], atol=1e-5, rtol=0)


def test_deformation_moves_each_channel_by_its_own_parameters() -> None:
    """A translation of one pixel in channel 0 only shifts channel 0 by one pixel; the rest stays."""
    h = S // 4
    warp = deform.ChannelAffineWarp(h, h)
    feat = torch.randn(2, 4, h, h)
    raw = torch.zeros(2, 4, 4)
    shift = 2.0 / h  # one pixel in grid units
    raw[:, 0, 2] = math.atanh(shift / deform.MAX_SHIFT)
    out = warp(feat, deform.affine_matrices(raw))
    torch.testing.assert_close(out[:, 0, :, :-1], feat[:, 0, :, 1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 1:], feat[:, 1:], atol=1e-5, rtol=0)
    params = deform.DeformParams(D, C)
    _nudge_deformation(params)
    raw = params(torch.randn(2, D), torch.randn(2, D))
    out = deform.ChannelAffineWarp(h, h)(torch.randn(2, C, h, h), deform.affine_matrices(raw))
    assert raw.shape == (2, C, 4) and out.shape == (2, C, h, h)
    _assert_every_parameter_learns(params, _weighted_sum(out))


def test_grid_sample_calls_are_4d_bilinear(monkeypatch) -> None:
    calls = []
    real = torch.nn.functional.grid_sample

    def spy(inp, grid, **kw):  # noqa: ANN001, ANN202
        calls.append((inp.dim(), grid.dim(), kw.get("mode"), inp.shape[1]))
        return real(inp, grid, **kw)

    monkeypatch.setattr(deform.F, "grid_sample", spy)
    model = G4G(CFG).eval()
    with torch.no_grad():
        model(*_inputs(2))
    assert calls and all(c == (4, 4, "bilinear", 1) for c in calls), calls  # channels folded into batch


def test_masks_cover_the_masked_rows_and_are_smooth() -> None:
    masks, face = deform.Masks(S, CFG.mask_from)(2)
    assert [tuple(m.shape) for m in masks] == [(2, 1, S // 4, S // 4), (2, 1, S // 2, S // 2), (2, 1, S, S)]
    for m in (*masks, face):
        side = m.shape[-1]
        assert m.min() >= 0 and m.max() <= 1
        assert m[..., : int(side * 0.25), :].max() < 0.01  # eyes: never written by the deformation
        assert m[..., int(side * CFG.mask_from):, :].min() > 0.95  # the zeroed rows are all covered
    rows = face[0, 0, :, 0]
    assert (rows[1:] - rows[:-1]).abs().max() < 0.15  # Gaussian-smoothed: no hard step
    assert (rows[1:] >= rows[:-1] - 1e-6).all()


def _decoder_inputs(b: int = 2) -> tuple:
    k2, k1 = parts.skip_widths(CFG)
    g = torch.Generator().manual_seed(3)
    masks, _ = deform.Masks(S, CFG.mask_from)(b)
    skip1 = torch.randn(b, k1, S, S, generator=g)
    skip1[:, :3] = torch.rand(b, 3, S, S, generator=g)  # the first reference's RGB
    return (torch.randn(b, C, S // 4, S // 4, generator=g),
            torch.randn(b, parts.source_widths(CFG)[1], S // 4, S // 4, generator=g),
            torch.randn(b, C, S // 8, S // 8, generator=g), masks, torch.randn(b, k2, S // 2, S // 2, generator=g),
            skip1)


def test_decoder_copies_the_reference_skip_at_init_and_every_parameter_learns() -> None:
    dec = parts.Decoder(CFG)
    args = _decoder_inputs()
    decoded = dec(*args)
    assert decoded.shape == (2, 3, S, S) and 0 <= decoded.min() and decoded.max() <= 1
    torch.testing.assert_close(decoded, args[5][:, :3], atol=1e-6, rtol=0)  # copy first ...
    _one_optimiser_step(dec, _weighted_sum(decoded))
    out = dec(*args)
    assert (out - args[5][:, :3]).abs().max() > 1e-4  # ... then amend
    _assert_every_parameter_learns(dec, _weighted_sum(out))


def test_reference_skips_carry_the_first_reference_rgb() -> None:
    er, skips = parts.ImageEncoder(3 * CFG.n_refs, parts.reference_widths(CFG)), parts.ReferenceSkips(CFG)
    refs = torch.rand(2, 3 * CFG.n_refs, S, S)
    f1, f2, _, _ = er.levels(refs)
    half, full = skips(f1, f2, refs[:, :3])
    assert half.shape == (2, parts.skip_widths(CFG)[0], S // 2, S // 2)
    assert full.shape == (2, parts.skip_widths(CFG)[1], S, S)
    torch.testing.assert_close(full[:, :3], refs[:, :3], atol=1e-6, rtol=0)
    _assert_every_parameter_learns(skips, _weighted_sum(half, full))


def test_blend_net_is_the_identity_on_the_composite_at_init_and_every_parameter_learns() -> None:
    blend = parts.BlendNet(CFG)
    _, face_mask = deform.Masks(S, CFG.mask_from)(2)
    decoded, source = torch.rand(2, 3, S, S), torch.rand(2, 3, S, S)
    composite = face_mask * decoded + (1 - face_mask) * source
    out = blend(composite, decoded, source, face_mask)
    torch.testing.assert_close(out, composite, atol=1e-6, rtol=0)
    _one_optimiser_step(blend, _weighted_sum(out))
    out = blend(composite, decoded, source, face_mask)
    assert out.shape == (2, 3, S, S) and 0 <= out.min() and out.max() <= 1
    assert (out - composite).abs().max() > 1e-4
    _assert_every_parameter_learns(blend, _weighted_sum(out))
    # not a residual: a blend net whose output ignored the composite would not depend on it
    assert not torch.allclose(out, blend(composite * 0, decoded, source, face_mask))


def test_untrained_generator_returns_source_top_and_first_reference_mouth() -> None:
    model = G4G(CFG)
    src, refs, prior, mel = _inputs(2)
    out = model(src, refs, prior, mel)
    expected = out.face_mask * refs[:, :3] + (1 - out.face_mask) * src
    torch.testing.assert_close(out.face, expected, atol=1e-6, rtol=0)


def test_whole_generator_outputs_and_every_parameter_learns() -> None:
    model = G4G(CFG)
    _nudge_deformation(model)
    src, refs, prior, mel = _inputs(2)
    out = model(src, refs, prior, mel)
    for name in ("face", "decoded", "composite"):
        assert getattr(out, name).shape == (2, 3, S, S)
    assert out.face_mask.shape == (2, 1, S, S) and len(out.deform_masks) == 3
    assert out.visual_emb.shape == out.audio_emb.shape == (2, D)
    attr = model.encode_attributes(out.face)
    assert attr.shape == (2, D)
    _one_optimiser_step(model, _weighted_sum(out.face, out.decoded, attr))
    out = model(src, refs, prior, mel)
    loss = _weighted_sum(out.face, out.decoded, model.encode_attributes(out.face)) + \
        G4G.contrastive_loss(out.visual_emb, out.audio_emb)
    _assert_every_parameter_learns(model, loss)


def test_forward_face_equals_step_on_prepared_features() -> None:
    model = G4G(CFG).eval()
    _nudge_deformation(model)
    src, refs, prior, mel = _inputs(3, seed=5)
    with torch.no_grad():
        full = model(src, refs, prior, mel).face
        feats = model.prepare(src, refs, prior)
        served = model.step(mel, **feats)
        other_audio = model.step(mel.flip(0), **feats)
    assert tuple(feats) == G4G.FEATURE_KEYS
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == model.feature_shapes()
    torch.testing.assert_close(served, full, atol=1e-5, rtol=0)
    assert (other_audio - served).abs().max() > 1e-4  # the audio reaches the face


def test_config_round_trip_and_refusals() -> None:
    assert G4GConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown G4G config keys"):
        G4GConfig.from_dict({**CFG.to_dict(), "layers": 3})
    with pytest.raises(ValueError, match="multiple of 16"):
        G4GConfig(size=72)
