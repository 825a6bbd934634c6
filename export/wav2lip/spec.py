"""The two Wav2Lip-family generators as data: layer tables, skip shapes, the input convention.

Torch-free, so that the CLI's ``--help``, the JSON writer and the serving side can read a
variant's facts without importing torch.  ``models.py`` builds modules from these tables and
``checkpoint.py`` checks files against the parameter names and shapes they imply.

A layer is ``(cin, cout, kernel, stride, padding, residual)``; a transposed layer is
``(cin, cout, kernel, stride, padding, output_padding)``.  Strides may be ``(h, w)`` pairs.  Each
encoder level is one ``nn.Sequential`` in the public checkpoints (``face_encoder_blocks.<level>``),
and its output is one skip feature the decoder concatenates, deepest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Stride = Union[int, tuple[int, int]]
Layer = tuple[int, int, int, Stride, int, bool]
TLayer = tuple[int, int, int, int, int, int]

KIND_96 = "wav2lip"
KIND_256 = "wav2lip-livetalking"
KINDS = (KIND_96, KIND_256)
MEL_SHAPE = (1, 80, 16)  # one model input window: (channel, mel bands, mel frames)


def _res(c: int, n: int) -> list[Layer]:
    """``n`` residual 3x3 layers at ``c`` channels."""
    return [(c, c, 3, 1, 1, True)] * n


def _down(cin: int, cout: int, n_res: int, stride: Stride = 2) -> list[Layer]:
    return [(cin, cout, 3, stride, 1, False), *_res(cout, n_res)]


def _up(cin: int, cout: int, n_res: int) -> tuple[TLayer, list[Layer]]:
    """A 2x upsampling transposed conv followed by ``n_res`` residual layers."""
    return (cin, cout, 3, 2, 1, 1), _res(cout, n_res)


def _audio_encoder() -> list[Layer]:
    """(1, 80, 16) mel window -> (512, 1, 1); the same in both variants."""
    return [(1, 32, 3, 1, 1, False), *_res(32, 2),
            (32, 64, 3, (3, 1), 1, False), *_res(64, 2),      # 27 x 16
            (64, 128, 3, 3, 1, False), *_res(128, 2),         # 9 x 6
            (128, 256, 3, (3, 2), 1, False), *_res(256, 1),   # 3 x 3
            (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]  # 1 x 1


@dataclass(frozen=True)
class Variant:
    kind: str
    face_size: int
    title: str
    encoder: tuple[tuple[Layer, ...], ...]  # face encoder levels
    audio: tuple[Layer, ...]
    # decoder level: (leading plain layers, transposed layer or None, residual layers)
    decoder: tuple[tuple[tuple[Layer, ...], TLayer | None, tuple[Layer, ...]], ...]
    output_in: int  # channels into the output block (last decoder width + first skip width)
    checkpoint_names: tuple[str, ...]  # the public files this variant loads

    @property
    def skip_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of every encoder level's output, shallowest (largest) first."""
        shapes, size = [], self.face_size
        for level in self.encoder:
            for cin, cout, k, stride, pad, _ in level:
                s = stride if isinstance(stride, int) else stride[0]
                size = (size + 2 * pad - k) // s + 1
            shapes.append((level[-1][1], size, size))
        return shapes

    @property
    def skip_names(self) -> list[str]:
        return [f"skip{i}" for i in range(len(self.encoder))]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (6, self.face_size, self.face_size)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (3, self.face_size, self.face_size)

    @property
    def skip_elements_per_frame(self) -> int:
        return sum(c * h * w for c, h, w in self.skip_shapes)


def _wav2lip_96() -> Variant:
    enc = (
        ((6, 16, 7, 1, 3, False),),                    # 96
        tuple(_down(16, 32, 2)),                        # 48
        tuple(_down(32, 64, 3)),                        # 24
        tuple(_down(64, 128, 2)),                       # 12
        tuple(_down(128, 256, 2)),                      # 6
        tuple(_down(256, 512, 1)),                      # 3
        ((512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)),  # 1
    )
    decoder = (
        (((512, 512, 1, 1, 0, False),), None, ()),      # 1x1: audio embedding -> 512
        ((), (1024, 512, 3, 1, 0, 0), tuple(_res(512, 1))),  # 1 -> 3
        ((), *map(tuple, _up(1024, 512, 2))),           # 3 -> 6
        ((), *map(tuple, _up(768, 384, 2))),            # 6 -> 12
        ((), *map(tuple, _up(512, 256, 2))),            # 12 -> 24
        ((), *map(tuple, _up(320, 128, 2))),            # 24 -> 48
        ((), *map(tuple, _up(160, 64, 2))),             # 48 -> 96
    )
    return Variant(KIND_96, 96, "Wav2Lip (Rudrabha/Wav2Lip, 96x96 face)", enc,
                   tuple(_audio_encoder()), _fix(decoder), 80, ("wav2lip.pth", "wav2lip_gan.pth"))


def _wav2lip_256() -> Variant:
    enc = (
        ((6, 16, 7, 1, 3, False),),                    # 256
        tuple(_down(16, 32, 2)),                        # 128
        tuple(_down(32, 64, 3)),                        # 64
        tuple(_down(64, 128, 2)),                       # 32
        tuple(_down(128, 256, 2)),                      # 16
        tuple(_down(256, 512, 1)),                      # 8
        tuple(_down(512, 512, 1)),                      # 4
        ((512, 512, 4, 1, 0, False), (512, 512, 1, 1, 0, False)),  # 1
    )
    decoder = (
        (((512, 512, 1, 1, 0, False),), None, ()),      # 1x1
        ((), (1024, 512, 4, 1, 0, 0), tuple(_res(512, 1))),  # 1 -> 4
        ((), *map(tuple, _up(1024, 512, 1))),           # 4 -> 8
        ((), *map(tuple, _up(1024, 512, 2))),           # 8 -> 16
        ((), *map(tuple, _up(768, 384, 2))),            # 16 -> 32
        ((), *map(tuple, _up(512, 256, 2))),            # 32 -> 64
        ((), *map(tuple, _up(320, 128, 2))),            # 64 -> 128
        ((), *map(tuple, _up(160, 64, 2))),             # 128 -> 256
    )
    return Variant(KIND_256, 256, "LiveTalking wav2lip256 (lipku/LiveTalking wav2lip_v2, 256x256 face)", enc,
                   tuple(_audio_encoder()), _fix(decoder), 80, ("wav2lip256.pth",))


def _fix(decoder):
    return tuple((tuple(lead), t, tuple(res)) for lead, t, res in decoder)


VARIANTS: dict[str, Variant] = {}


def variant(kind: str) -> Variant:
    if kind not in KINDS:
        raise ValueError(f"unknown Wav2Lip variant {kind!r}; choose one of {', '.join(KINDS)}")
    if kind not in VARIANTS:
        VARIANTS[kind] = _wav2lip_96() if kind == KIND_96 else _wav2lip_256()
    return VARIANTS[kind]
