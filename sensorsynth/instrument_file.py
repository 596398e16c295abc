"""The ``.instrument`` file: one safetensors file whose header carries a validated JSON manifest.

(Past 500 lines on purpose: the format is one contract, and its manifest models, validation, header-first
reading with the load budget, writing, version upgrades and atomic delivery share its private helpers.)

safetensors stores raw little-endian arrays behind a JSON header and never executes anything on load, so a
file from a stranger is safe to open. The manifest lives in the header's ``__metadata__`` under the key
``"sensorsynth"``. Nothing here imports torch: players load instruments without it.

Arrays (K = control_plane_dim, R = n_resonances, E = expressivity, M = n_oscillators):

    freq_hz (R,E,M)  decay_per_s (R,E,M)  amplitude (R,E,M)  phase (R,E,M)   the oscillators, normed at
                                                                              the native rate
    attack_envelopes (K, attack_frames)   router (K,R)   mix (R,2) logits   gains (R,)
    deformations (E, deformation_frames)  logits of the fitted performance
    control_index (nnz,) int32 = frame·K + k    control_value (nnz,)         the sparse control signal
    mapping_atoms (C, K) float32, unit rows     the instrument's own basis: what sensors play through it
                                                (sensorsynth.instrument.basis; described by manifest.mapping)

Files and bytes. :func:`save`/:func:`load` work on paths; :func:`dumps`/:func:`loads` produce and read the
same bytes in memory (a trainer sending a fitted instrument over a wire). Both readers validate the same way
and raise :class:`InstrumentFileError` naming the source (the path, or the name given to :func:`loads`).

The load budget. A file of a few kB can describe an instrument whose playing needs gigabytes (a long attack,
a 1 kHz file rate, K = 1024). :func:`load` and :func:`loads` read the file's size and its header first and
refuse, before any array is decoded (and before a version-1 upgrade fits a basis), a file whose playing would
exceed the :class:`~sensorsynth.instrument.budget.LoadBudget` (default 64 MiB at 48 kHz and 8 voices, plus
``FitLimits`` and the file rate): ``sensorsynth/instrument/budget.py`` says how the figure is computed. Every
reader (the server's library, the CLI, the trainer's broker and client, the server's fit edge) gets the check.

Format versions. ``FORMAT_VERSION`` is the version writers write. It is bumped by any change an older
reader would misread or refuse: a new or renamed array, a new manifest field (the manifest forbids unknown
fields), a changed meaning or unit. Readers accept every version from ``MIN_FORMAT_VERSION`` (1, the first)
up to ``FORMAT_VERSION``: an older file is upgraded in memory, one version at a time, by ``UPGRADES[v]``
(version v -> v + 1, a pure function of the raw manifest dict and the arrays) before validation, so the
rest of sensorsynth only ever sees the current version. Upgrades never rewrite the file and are never
removed, so every file ever written stays readable. The checksum is verified on the arrays as stored. A
file from a newer sensorsynth is refused with "manifest version N, this sensorsynth reads up to M", never
guessed at; so is a version that never existed (0, negative, not an integer).

The versions:

- 1: the first (oscillators, attacks, router, mix, gains, deformations, sparse control signal).
- 2: adds the instrument's mapping basis: the array ``mapping_atoms`` and the manifest field ``mapping``
  (method, atoms, level, cap, reconstruction error, active frames), so every instrument plays from every
  sensor. ``UPGRADES[1]`` computes it from the version-1 control signal on load (numpy dictionary learning,
  milliseconds; cached per process by the signal's content), exactly as a writer computes it at save time.
- 3: adds the manifest field ``attack_noise`` (generator name and seed): the one noise draw the fit used for
  every attack, which players replay (``sensorsynth.instrument.noise``). ``None`` means the instrument was
  fitted on fresh noise and plays fresh noise. ``UPGRADES[2]`` sets it to ``None``, which is what every
  version-2 file was fitted with.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .atomic import atomic_write
from .instrument.budget import BudgetError, LoadBudget, check_playable, default_budget
from .instrument.spec import ModelSpec

FORMAT = "sensorsynth-instrument"
FORMAT_VERSION = 3
MIN_FORMAT_VERSION = 1
METADATA_KEY = "sensorsynth"

RawManifest = dict[str, Any]
Upgrade = Callable[[RawManifest, dict[str, np.ndarray]], tuple[RawManifest, dict[str, np.ndarray]]]
# UPGRADES[v] turns a version-v manifest and its arrays into version v + 1 (see the module docstring);
# filled at the end of this module
UPGRADES: dict[int, Upgrade] = {}


class InstrumentFileError(Exception):
    """A file that is not a usable instrument; the message names the file and the problem."""


class SourceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    duration_s: float = Field(ge=0)
    sample_rate: int = Field(gt=0)
    channels: int = Field(ge=1)


class MappingInfo(BaseModel):
    """How the mapping basis (``mapping_atoms``) was made, and the loudness it plays at."""

    model_config = ConfigDict(extra="forbid")
    method: str = Field(max_length=32)
    signed: bool  # signed atoms play +a one way and -a the other (the seed's relu(basis · Δx))
    atoms: int = Field(ge=1, le=1024)
    level: float = Field(gt=0, le=1e6)  # the instrument's typical event peak
    cap: float = Field(gt=0, le=1e6)  # its loud event peak: the loudest a sensor event plays
    reconstruction: float = Field(ge=0)  # relative error of the atoms rebuilding the control signal
    frames: int = Field(ge=0)  # active frames it was fitted on


class AttackNoise(BaseModel):
    """The fixed attack noise an instrument was fitted with: ``noise.attack_noise(seed, K, attack_size)``."""

    model_config = ConfigDict(extra="forbid")
    generator: Literal["splitmix64"] = "splitmix64"
    seed: int = Field(ge=0, lt=2**64)


class Manifest(BaseModel):
    """Everything about an instrument except its arrays."""

    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    sensorsynth_version: str = "0.1.0"
    spec: ModelSpec
    training: dict[str, Any] = Field(default_factory=dict)
    final_loss: float | None = None
    source: SourceInfo | None = None
    mapping: MappingInfo | None = None
    attack_noise: AttackNoise | None = None  # None: fresh noise for every attack, as the seed does
    arrays: dict[str, list[int]] = Field(default_factory=dict)
    arrays_sha256: str | None = Field(None, description="digest of every array's bytes, in name order")


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shape of every fixed-size array; the two control arrays only need to match each other."""
    k, r, e, m = spec.control_plane_dim, spec.n_resonances, spec.expressivity, spec.n_oscillators
    modes = (r, e, m)
    return {
        "freq_hz": modes,
        "decay_per_s": modes,
        "amplitude": modes,
        "phase": modes,
        "attack_envelopes": (k, spec.attack_frames),
        "router": (k, r),
        "mix": (r, 2),
        "gains": (r,),
        "deformations": (e, spec.deformation_frames),
    }


@dataclass
class Instrument:
    """A fitted instrument: plain arrays and a manifest. The renderer needs nothing else."""

    manifest: Manifest
    freq_hz: np.ndarray
    decay_per_s: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    attack_envelopes: np.ndarray
    router: np.ndarray
    mix: np.ndarray
    gains: np.ndarray
    deformations: np.ndarray
    control_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    control_value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    mapping_atoms: np.ndarray | None = None  # (C, K); None until computed (ensure_mapping)
    stored_version: int | None = None  # the format version of the file it was read from (before upgrades)

    ARRAY_NAMES = tuple(expected_shapes(ModelSpec()).keys()) + ("control_index", "control_value", "mapping_atoms")

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.spec

    @property
    def name(self) -> str:
        return self.manifest.name

    def arrays(self) -> dict[str, np.ndarray]:
        self.ensure_mapping()
        return {name: getattr(self, name) for name in self.ARRAY_NAMES}

    def ensure_mapping(self) -> None:
        """Compute the mapping basis from the control signal if this instrument has none yet (a freshly
        fitted one); writers call it, so every saved instrument carries its basis."""
        if self.mapping_atoms is not None and self.manifest.mapping is not None:
            return
        atoms, info = compute_mapping(self.control_index, self.control_value, self.spec.control_plane_dim)
        self.mapping_atoms = atoms
        self.manifest = self.manifest.model_copy(update={"mapping": info})

    def control_signal(self) -> np.ndarray:
        """The fitted control signal as a dense (K, frames) array."""
        spec = self.spec
        dense = np.zeros(spec.n_frames * spec.control_plane_dim, np.float32)
        dense[self.control_index] = self.control_value
        return dense.reshape(spec.n_frames, spec.control_plane_dim).T.copy()

    def validate(self) -> None:
        """Raise ValueError naming the first array whose shape, dtype or values are wrong."""
        for name, shape in expected_shapes(self.spec).items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                raise ValueError(f"array {name!r} must be float32, got {getattr(arr, 'dtype', type(arr))}")
            if arr.shape != shape:
                raise ValueError(f"array {name!r} has shape {list(arr.shape)}, the spec needs {list(shape)}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"array {name!r} holds NaN or inf")
        idx, val = self.control_index, self.control_value
        if idx.dtype != np.int32 or idx.ndim != 1 or val.dtype != np.float32 or val.shape != idx.shape:
            raise ValueError("control_index (int32) and control_value (float32) must be 1-D and equally long")
        n_cells = self.spec.n_frames * self.spec.control_plane_dim
        if idx.size and (idx.min() < 0 or idx.max() >= n_cells):
            raise ValueError(f"control_index points outside the {n_cells} cells of the control plane")
        if not np.all(np.isfinite(val)) or (val.size and val.min() < 0):
            raise ValueError("control_value must be finite and non-negative")
        if np.any(self.freq_hz < 0) or np.any(self.decay_per_s < 0):
            raise ValueError("oscillator frequencies and decays must be non-negative")
        atoms = self.mapping_atoms
        if atoms is not None:
            k = self.spec.control_plane_dim
            if not isinstance(atoms, np.ndarray) or atoms.dtype != np.float32 or atoms.ndim != 2:
                raise ValueError("array 'mapping_atoms' must be a 2-D float32 array")
            if atoms.shape[1] != k or not 1 <= atoms.shape[0] <= 1024:
                raise ValueError(f"array 'mapping_atoms' has shape {list(atoms.shape)}, the spec needs [1..1024, {k}]")
            if not np.all(np.isfinite(atoms)) or np.abs(atoms).max(initial=0.0) > 1.001:
                raise ValueError("array 'mapping_atoms' must hold finite unit-norm atoms")
            info = self.manifest.mapping
            if info is None or info.atoms != atoms.shape[0]:
                raise ValueError("manifest 'mapping' must describe the mapping_atoms array")
        # amplitudes are unit-normed and the rest are small logits and weights: anything huge is corrupt
        for name, bound in (("amplitude", 1e3), ("router", 1e6), ("gains", 1e6), ("attack_envelopes", 1e6),
                            ("mix", 1e4), ("deformations", 1e4), ("control_value", 1e6)):
            if np.abs(getattr(self, name)).max(initial=0.0) > bound:
                raise ValueError(f"array {name!r} holds values beyond {bound:g}: not a fitted instrument")

    def size_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays().values()))


def sparse_control(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, frames) -> (flat frame·K + k indices, values) of the non-zero cells."""
    flat = np.ascontiguousarray(dense.T).reshape(-1)
    index = np.flatnonzero(flat).astype(np.int32)
    return index, flat[index].astype(np.float32)


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes: catches corruption that still decodes as numbers."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packed(instrument: Instrument) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, safetensors metadata) to write. Validates first, and refreshes the manifest's array shapes
    and checksum (derived data) on the instrument itself."""
    instrument.validate()
    instrument.ensure_mapping()
    instrument.validate()
    arrays = {name: np.ascontiguousarray(a) for name, a in instrument.arrays().items()}
    manifest = instrument.manifest.model_copy(
        update={
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arrays": {k: list(v.shape) for k, v in arrays.items()},
            "arrays_sha256": arrays_digest(arrays),
        }
    )
    instrument.manifest = manifest
    return arrays, {METADATA_KEY: manifest.model_dump_json()}


def save(instrument: Instrument, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half an instrument behind."""
    from safetensors.numpy import save_file

    arrays, metadata = _packed(instrument)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the default mode: safetensors writes 0600; an instrument is meant to be shared
    return atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=metadata))


def dumps(instrument: Instrument) -> bytes:
    """The instrument as the bytes of a ``.instrument`` file (what :func:`save` writes), for a wire."""
    from safetensors.numpy import save

    arrays, metadata = _packed(instrument)
    return save(arrays, metadata=metadata)


def _fail(source: str | Path, message: str) -> InstrumentFileError:
    return InstrumentFileError(f"{source}: {message}")


def load(path: str | Path, budget: LoadBudget | None = None) -> Instrument:
    """Read and validate an instrument file; any problem raises InstrumentFileError naming it.

    The file's size, its header and what playing it would cost (``budget``, default the process's: see
    :mod:`sensorsynth.instrument.budget`) are checked before the arrays are read, so a small file that asks for
    gigabytes is refused in microseconds and kilobytes."""
    path = Path(path)
    budget = budget or default_budget()
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not an instrument file")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            _check_size(size, path, budget)
            head = handle.read(8)
            n = _header_length(head, size, path, budget)
            _check_manifest(_header_metadata(handle.read(n), path), path, budget)
            handle.seek(0)
            data = handle.read(budget.max_file_bytes + 1)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc}") from None
    return loads(data, str(path), budget)


def loads(data: bytes, name: str = "<bytes>", budget: LoadBudget | None = None) -> Instrument:
    """Read and validate an instrument from the bytes of a ``.instrument`` file; any problem raises
    InstrumentFileError naming ``name`` (a sender, a job id) and the problem, exactly as :func:`load` (the
    load budget included, checked on the header before the arrays are decoded)."""
    metadata, arrays = _read(data, name, budget or default_budget())
    return _parse(metadata, arrays, name)


def _check_size(size: int, source: str | Path, budget: LoadBudget) -> None:
    if size > budget.max_file_bytes:
        raise _fail(source, f"{size} bytes is larger than the {budget.max_file_bytes} bytes an instrument file "
                            "may have")  # fmt: skip


def _header_length(head: bytes, size: int, source: str | Path, budget: LoadBudget) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes, bounded before it is read."""
    if len(head) < 8 or size < 8:
        raise _fail(source, f"not a readable instrument file (truncated or corrupt?): {size} bytes is shorter "
                            "than a safetensors header")  # fmt: skip
    (n,) = struct.unpack("<Q", head[:8])
    if n > size - 8:
        raise _fail(source, f"not a readable instrument file (truncated or corrupt?): header of {n} bytes does "
                            f"not fit in {size} bytes")  # fmt: skip
    if n > budget.max_header_bytes:
        raise _fail(source, f"header of {n} bytes is larger than the {budget.max_header_bytes} bytes a manifest "
                            "may have")  # fmt: skip
    return int(n)


def _header_metadata(text: bytes, source: str | Path) -> dict[str, str]:
    try:
        header = json.loads(text)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("header metadata is not a JSON object")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise _fail(source, f"not a readable instrument file (truncated or corrupt?): {exc}") from None
    return metadata


def _raw_manifest(metadata: dict[str, str], source: str | Path) -> RawManifest:
    """The manifest as stored (any version), its format and version checked."""
    if METADATA_KEY not in metadata:
        raise _fail(source, "has no sensorsynth manifest (is it an instrument file?)")
    try:
        raw = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, TypeError) as exc:
        raise _fail(source, f"manifest is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else raw
        raise _fail(source, f"manifest format is {found!r}, not {FORMAT!r}")
    _check_version(raw.get("format_version"), source)
    return raw


def _check_manifest(metadata: dict[str, str], source: str | Path, budget: LoadBudget) -> None:
    """Refuse, from the header alone, a file whose sizes are invalid or over the load budget. Every format
    version stores its sizes as the same ``spec``, so this runs before any upgrade (a version-1 file's
    upgrade fits a basis on its control signal: not for a file that is over the budget)."""
    raw = _raw_manifest(metadata, source)
    try:
        spec = ModelSpec.model_validate(raw.get("spec"))
    except ValidationError as exc:
        raise _fail(source, f"invalid manifest: spec: {exc}") from None
    try:
        check_playable(spec, budget)
    except BudgetError as exc:
        raise _fail(source, str(exc)) from None


def _read(data: bytes, name: str, budget: LoadBudget) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, arrays) of safetensors bytes. The header (an 8-byte little-endian length and JSON) is read
    and checked here (size, manifest, load budget) before safetensors decodes and checks the arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_arrays

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail(name, f"not a readable instrument file (truncated or corrupt?): expected bytes, got "
                          f"{type(data).__name__}")  # fmt: skip
    data = bytes(data)
    _check_size(len(data), name, budget)
    n = _header_length(data[:8], len(data), name, budget)
    metadata = _header_metadata(data[8 : 8 + n], name)
    _check_manifest(metadata, name, budget)
    try:
        arrays = load_arrays(data)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise _fail(name, f"not a readable instrument file (truncated or corrupt?): {exc}") from None
    return metadata, arrays


def _check_version(version: Any, source: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < MIN_FORMAT_VERSION:
        raise _fail(source, f"manifest version {version!r} is not a format version "
                            f"({MIN_FORMAT_VERSION} to {FORMAT_VERSION} exist)")  # fmt: skip
    if version > FORMAT_VERSION:
        raise _fail(source, f"manifest version {version}, this sensorsynth reads up to {FORMAT_VERSION} "
                            "(written by a newer sensorsynth?)")  # fmt: skip
    return version


def upgrade(raw: RawManifest, arrays: dict[str, np.ndarray]) -> tuple[RawManifest, dict[str, np.ndarray]]:
    """Bring an older manifest and its arrays to FORMAT_VERSION through UPGRADES, one version at a time.
    ValueError when a step is missing (a bug: every version since MIN_FORMAT_VERSION must have one)."""
    version = raw["format_version"]
    while version < FORMAT_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise ValueError(f"no upgrade from manifest version {version} to {version + 1}")
        raw, arrays = step(dict(raw), dict(arrays))
        version += 1
        raw["format_version"] = version
    return raw, arrays


def _parse(metadata: dict[str, str], arrays: dict[str, np.ndarray], source: str) -> Instrument:
    raw = _raw_manifest(metadata, source)
    stored_version = _check_version(raw.get("format_version"), source)
    stored_digest = raw.get("arrays_sha256")
    stored_arrays = arrays
    if stored_version < FORMAT_VERSION:
        try:
            raw, arrays = upgrade(raw, arrays)
        except (ValueError, KeyError, TypeError) as exc:
            raise _fail(source, f"cannot upgrade manifest version {stored_version}: {exc}") from None
        # the stored shapes and checksum describe the stored arrays: describe the upgraded ones instead
        shapes = {k: list(v.shape) for k, v in arrays.items()}
        raw = {**raw, "arrays": shapes, "arrays_sha256": arrays_digest(arrays)}
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise _fail(source, f"invalid manifest: {exc}") from None
    if manifest.mapping is None:
        raise _fail(source, "manifest has no 'mapping' (a version-2 file carries its mapping basis)")
    missing = [name for name in Instrument.ARRAY_NAMES if name not in arrays]
    if missing:
        raise _fail(source, f"missing arrays: {', '.join(missing)}")
    extra = sorted(set(arrays) - set(Instrument.ARRAY_NAMES))
    if extra:
        raise _fail(source, f"unexpected arrays: {', '.join(extra)}")
    instrument = Instrument(manifest=manifest, **arrays, stored_version=stored_version)
    try:
        instrument.validate()
    except ValueError as exc:
        raise _fail(source, str(exc)) from None
    if stored_digest is not None and arrays_digest(stored_arrays) != stored_digest:
        raise _fail(source, "array data does not match the manifest's checksum (corrupt file?)")
    return instrument


def describe(instrument: Instrument, path: str | Path | None = None) -> dict[str, Any]:
    """A summary for ``sensorsynth info``: shapes, rates, provenance, size."""
    m = instrument.manifest
    out: dict[str, Any] = {
        "name": m.name,
        "format": f"{m.format} v{m.format_version}" + (
            f" (file v{instrument.stored_version}, upgraded when read)"
            if instrument.stored_version not in (None, m.format_version) else ""),
        "created": m.created,
        "spec": m.spec.model_dump(),
        "duration_s": round(m.spec.duration, 3),
        "oscillators": int(instrument.freq_hz.size),
        "frequency_range_hz": [round(float(instrument.freq_hz.min()), 1), round(float(instrument.freq_hz.max()), 1)],
        "active_control_elements": int(instrument.control_index.size),
        "arrays": {k: list(v.shape) for k, v in instrument.arrays().items()},
        "array_bytes": instrument.size_bytes(),
        "final_loss": m.final_loss,
        "mapping": m.mapping.model_dump() if m.mapping else None,
        "attack_noise": m.attack_noise.model_dump() if m.attack_noise else "fresh",
        "training": m.training,
        "source": m.source.model_dump() if m.source else None,
    }
    if path is not None:
        out["file_bytes"] = Path(path).stat().st_size
    return out


def compute_mapping(index: np.ndarray, value: np.ndarray, control_dims: int) -> tuple[np.ndarray, MappingInfo]:
    """(mapping_atoms, MappingInfo) of a sparse control signal, with the default basis method."""
    from .instrument.basis import cached_fit

    basis, error, frames = cached_fit(index, value, control_dims)
    info = MappingInfo(method=basis.method, signed=basis.signed, atoms=int(basis.atoms.shape[0]),
                       level=round(basis.level, 6), cap=round(basis.cap, 6), reconstruction=round(error, 6),
                       frames=frames)
    return np.ascontiguousarray(basis.atoms, np.float32), info


def _upgrade_1_to_2(raw: RawManifest, arrays: dict[str, np.ndarray]) -> tuple[RawManifest, dict[str, np.ndarray]]:
    """Version 2 adds the mapping basis: compute it from the version-1 control signal."""
    k = int(raw["spec"]["control_plane_dim"])
    if not 1 <= k <= 1024:
        raise ValueError(f"control_plane_dim {k} is out of range")
    index, value = arrays["control_index"], arrays["control_value"]
    if index.ndim != 1 or value.shape != index.shape:
        raise ValueError("control_index and control_value must be 1-D and equally long")
    atoms, info = compute_mapping(index, value, k)
    return {**raw, "mapping": info.model_dump()}, {**arrays, "mapping_atoms": atoms}


def _upgrade_2_to_3(raw: RawManifest, arrays: dict[str, np.ndarray]) -> tuple[RawManifest, dict[str, np.ndarray]]:
    """Version 3 names the attack noise an instrument owns; every version-2 file was fitted on fresh noise."""
    return {**raw, "attack_noise": None}, arrays


UPGRADES[1] = _upgrade_1_to_2
UPGRADES[2] = _upgrade_2_to_3


# --------------------------------------------------------------------------- delivering into a models folder
def free_name(base: str, taken: Callable[[str], bool]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first that ``taken`` says is free."""
    if not taken(base):
        return base
    stem = base[:60]
    for n in range(2, 10_000):
        candidate = f"{stem}-{n}"
        if not taken(candidate):
            return candidate
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def write_instrument(folder: Path, name: str, blob: bytes, tag: str, *, replace: bool,
                     taken: Callable[[str], bool] | None = None) -> Path:
    """Write ``blob`` as ``folder/NAME.instrument`` atomically: a dot-named temporary file (the library's scan
    ignores it), fsynced, then linked into place. Without ``replace`` it never overwrites: an existing name
    (one that appeared meanwhile, too) gets the next free suffix. Returns the path written."""
    del tag  # the temporary name is unique without it (see sensorsynth.atomic)
    if replace:
        return atomic_write(folder / f"{name}.instrument", blob)
    is_taken = taken or (lambda n: False)
    while True:
        target = folder / f"{free_name(name, lambda n: is_taken(n) or (folder / f'{n}.instrument').exists())}.instrument"
        try:
            return atomic_write(target, blob, clobber=False)  # never clobbers
        except FileExistsError:
            continue  # appeared between the check and the link: the next suffix
