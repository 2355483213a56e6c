"""What the suite downloads and the values each file must verify against.

Copied from the manifest of the verified data mirror the suite was built against: the sha256 of each file, its size,
its canonical URLs, and the sha256 of the decoded arrays (C-ordered bytes). These live in the
repository so a download is checked against what we expect, never against the source itself.

The suite uses the two pickles the paper's authors loaded: ``mnist.pkl.gz`` (their 50,000 /
10,000 / 10,000 MNIST split, images float32 = pixel / 256) and ``freyfaces.pkl`` (the 1,965 Frey
faces, uint8, 28 x 20 = 560 pixels).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArrayExpectation:
    """Shape, dtype and content sha256 of one decoded array."""

    shape: tuple[int, ...]
    dtype: str
    sha256: str


@dataclass(frozen=True)
class SourceFile:
    name: str
    dataset: str
    bytes: int
    sha256: str
    canonical_urls: tuple[str, ...]
    arrays: dict[str, ArrayExpectation] = field(default_factory=dict)


MNIST_PKL = SourceFile(
    name="mnist.pkl.gz",
    dataset="mnist",
    bytes=17_051_982,
    sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    canonical_urls=(
        "https://github.com/mnielsen/neural-networks-and-deep-learning/raw/master/data/mnist.pkl.gz",
    ),
    arrays={
        # images as uint8 pixels (= float32 value * 256, exact), labels as stored (int64)
        "train_x": ArrayExpectation((50_000, 784), "uint8", "c80ceb24eedca80f31cfca280b8fb911cbb41b9990f998bebd40e26b1ab6d0f8"),
        "train_y": ArrayExpectation((50_000,), "int64", "3fc61c21900fc0b58d42fdaf93c02687003667ff54f671496c1d367a95cae2ba"),
        "valid_x": ArrayExpectation((10_000, 784), "uint8", "2b079632b0defaf508a5ebf8c4ac1e18ce15c8b337da087e9c3e1c84c618d244"),
        "valid_y": ArrayExpectation((10_000,), "int64", "bfddcd2fec1923668512623a71a47033ec687581bc04ac5708c8857aa0193630"),
        "test_x": ArrayExpectation((10_000, 784), "uint8", "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"),
        "test_y": ArrayExpectation((10_000,), "int64", "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243"),
    },
)

FREY_FACE_PKL = SourceFile(
    name="freyfaces.pkl",
    dataset="frey_face",
    bytes=3_568_521,
    sha256="3b69410c6a5fd6e03f09012905168be3712373a094a776f7e58fcd0670d2138a",
    canonical_urls=("https://github.com/y0ast/Variational-Autoencoder/raw/master/freyfaces.pkl",),
    arrays={
        "faces": ArrayExpectation((1965, 560), "uint8", "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"),
    },
)

SOURCE_FILES: dict[str, SourceFile] = {f.name: f for f in (MNIST_PKL, FREY_FACE_PKL)}
