"""Sizes and rates of a resonance model. Defaults are the seed article's."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelSpec(BaseModel):
    """Every size the model needs; validated so a bad config fails before any tensor exists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int = Field(22050, ge=1000, le=384000)
    n_samples: int = Field(2**17, ge=256, le=2**24)  # ≤ ~6 min at 48 kHz: a file cannot ask for huge buffers
    control_plane_dim: int = Field(16, ge=1, le=1024)
    n_resonances: int = Field(16, ge=1, le=1024)
    expressivity: int = Field(2, ge=1, le=64)
    n_oscillators: int = Field(64, ge=1, le=4096)
    control_hop: int = Field(128, ge=1, le=2**16)
    deformation_frame: int = Field(128, ge=1, le=2**16)
    attack_size: int = Field(2048, ge=1, le=2**18)
    attack_frames: int = Field(256, ge=2, le=2**16)

    @model_validator(mode="after")
    def _divisible(self) -> "ModelSpec":
        if self.n_samples % self.control_hop:
            raise ValueError(f"n_samples {self.n_samples} is not a multiple of control_hop {self.control_hop}")
        if self.n_samples % self.deformation_frame:
            raise ValueError(
                f"n_samples {self.n_samples} is not a multiple of deformation_frame {self.deformation_frame}"
            )
        if self.attack_size > self.n_samples:
            raise ValueError(f"attack_size {self.attack_size} is longer than n_samples {self.n_samples}")
        return self

    @property
    def n_frames(self) -> int:
        """Control-plane frames over the clip."""
        return self.n_samples // self.control_hop

    @property
    def deformation_frames(self) -> int:
        return self.n_samples // self.deformation_frame

    @property
    def n_modes(self) -> int:
        return self.n_resonances * self.expressivity * self.n_oscillators

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate
