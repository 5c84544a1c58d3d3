"""The configuration of ``data synth`` (here, not beside its generator: the CLI reads these
defaults without importing numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from facedistill.config.fields import opt
from facedistill.errors import ConfigError


@dataclass(frozen=True)
class SynthConfig:
    """What defines a synthetic dataset; equal configs give byte-identical datasets."""

    n: int = opt(20_000, "Number of images.")
    size: int = opt(64, "Side of the aligned square images, pixels.")
    seed: int = opt(0)
    wild: bool = opt(False, "Also write in-the-wild photos (img_celeba/) with bbox and "
                            "landmark files.", secondary="--no-wild")
    images_per_identity: float = opt(5.0, "Mean number of photos per identity.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.n < 3:
            raise ConfigError(f"must be at least 3 (one image per split), got {self.n}",
                            field="n")
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"must be in 16..1024 pixels, got {self.size}", field="size")
        if self.seed < 0:
            raise ConfigError(f"must be >= 0, got {self.seed}", field="seed")
        if not (math.isfinite(self.images_per_identity) and self.images_per_identity >= 1):
            raise ConfigError(f"must be a number >= 1, got "
                            f"{self.images_per_identity}", field="images_per_identity")
