"""The .instrument file: exact round trip, size, and a clear InstrumentFileError for every broken file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sensorsynth.instrument.export import to_instrument
from sensorsynth.instrument.model import ResonanceModel
from sensorsynth.instrument.spec import ModelSpec
from sensorsynth.instrument_file import (
    METADATA_KEY,
    Instrument,
    InstrumentFileError,
    SourceInfo,
    describe,
    load,
    save,
)

SMALL = ModelSpec(
    n_samples=4096,
    control_plane_dim=4,
    n_resonances=3,
    expressivity=2,
    n_oscillators=8,
    control_hop=128,
    deformation_frame=256,
    attack_size=512,
    attack_frames=32,
)
SOURCE = SourceInfo(name="clip.wav", sha256="ab" * 32, duration_s=0.19, sample_rate=22050, channels=2)


def _model(spec: ModelSpec, active: int | None = None) -> ResonanceModel:
    """A seeded model; with ``active`` its control signal is sparse, as a fitted one is."""
    model = ResonanceModel(spec, generator=torch.Generator().manual_seed(1234))
    if active is not None:
        with torch.no_grad():
            plane = torch.full_like(model.control_plane, -1.0)
            cells = torch.randperm(plane.numel(), generator=torch.Generator().manual_seed(5))[:active]
            plane.view(-1)[cells] = 4.0
            model.control_plane.copy_(plane)
    return model


@pytest.fixture(scope="module")
def small() -> Instrument:
    training = {"steps": 3, "loss": "seed", "lr": 0.01, "wall_time_s": 1.5}
    return to_instrument(_model(SMALL), "small", training=training, final_loss=12.5, source=SOURCE)


@pytest.fixture()
def saved(tmp_path: Path, small: Instrument) -> Path:
    return save(small, tmp_path / "small.instrument")


def _raw(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest dict, arrays) read with safetensors directly, to build broken files from a good one."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        manifest = json.loads(handle.metadata()[METADATA_KEY])
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    return manifest, arrays


def _write(path: Path, arrays: dict[str, np.ndarray], manifest: dict | None) -> Path:
    metadata = None if manifest is None else {METADATA_KEY: json.dumps(manifest)}
    save_file(arrays, str(path), metadata=metadata)
    return path


def _fails(path: Path, *fragments: str) -> str:
    with pytest.raises(InstrumentFileError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------- good


def test_round_trip_is_exact(saved: Path, small: Instrument) -> None:
    loaded = load(saved)
    assert loaded.manifest == small.manifest
    assert loaded.manifest.model_dump() == small.manifest.model_dump()
    assert loaded.manifest.source == SOURCE and loaded.manifest.training["steps"] == 3
    assert loaded.manifest.final_loss == 12.5
    for name, array in small.arrays().items():
        got = getattr(loaded, name)
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array, err_msg=name)
    np.testing.assert_array_equal(loaded.control_signal(), small.control_signal())
    assert loaded.manifest.arrays == {k: list(v.shape) for k, v in small.arrays().items()}


def test_file_is_plain_safetensors(saved: Path) -> None:
    """An 8-byte header length, a JSON header, raw arrays: nothing executable, no pickle."""
    data = saved.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(Instrument.ARRAY_NAMES)
    assert json.loads(header["__metadata__"][METADATA_KEY])["format"] == "sensorsynth-instrument"
    assert b"\x80\x04" not in data[:2] and not data.startswith(b"PK")  # not a pickle, not a torch zip


def test_save_leaves_no_temp_file_and_overwrites(tmp_path: Path, small: Instrument) -> None:
    path = tmp_path / "a.instrument"
    save(small, path)
    save(small, path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.instrument"]
    load(path)


def test_describe_reports_shapes_and_provenance(saved: Path) -> None:
    info = describe(load(saved), saved)
    assert info["arrays"]["freq_hz"] == [3, 2, 8]
    assert info["source"]["sha256"] == SOURCE.sha256
    assert info["file_bytes"] == saved.stat().st_size
    json.dumps(info)


def test_default_spec_file_is_at_most_100_kb(tmp_path: Path) -> None:
    """A fitted default-size instrument (sparse control, ~200 active cells) fits in 100 kB."""
    instrument = to_instrument(_model(ModelSpec(), active=200), "default", training={"steps": 600})
    path = save(instrument, tmp_path / "default.instrument")
    assert instrument.control_index.size == 200
    size = path.stat().st_size
    assert size <= 100_000, f"{size} bytes"
    assert load(path).freq_hz.shape == (16, 2, 64)


def test_save_refuses_an_invalid_instrument(tmp_path: Path, small: Instrument) -> None:
    broken = Instrument(**{**small.arrays(), "manifest": small.manifest, "gains": small.gains * np.nan})
    with pytest.raises(ValueError, match="gains"):
        save(broken, tmp_path / "broken.instrument")
    assert not (tmp_path / "broken.instrument").exists()


# ---------------------------------------------------------------------------------------------- bad


def test_missing_file(tmp_path: Path) -> None:
    _fails(tmp_path / "nope.instrument", "no such file")


def test_directory(tmp_path: Path) -> None:
    _fails(tmp_path, "directory")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    _fails(saved, "truncated or corrupt")


def test_truncated_inside_the_header(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:20])
    _fails(saved, "truncated or corrupt")


def test_corrupt_header_bytes(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[8:40] = b"\xff" * 32
    saved.write_bytes(bytes(data))
    _fails(saved, "truncated or corrupt")


def test_corrupt_header_length(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)
    saved.write_bytes(bytes(data))
    _fails(saved, "truncated or corrupt")


def test_corrupt_array_bytes_caught_as_nan(saved: Path) -> None:
    """Flipped data bytes that turn values into NaN are caught by validation."""
    data = bytearray(saved.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    start, _ = json.loads(data[8 : 8 + header_len])["freq_hz"]["data_offsets"]
    offset = 8 + header_len + start
    data[offset : offset + 16] = b"\xff" * 16  # 0xffffffff is a float32 NaN
    saved.write_bytes(bytes(data))
    _fails(saved, "freq_hz", "NaN")


@pytest.mark.parametrize("content", [b"RIFF\x00\x00\x00\x00WAVEfmt ", b"hello, this is text\n" * 50, b""])
def test_not_a_safetensors_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.instrument"
    path.write_bytes(content)
    _fails(path, "truncated or corrupt")


def test_a_real_audio_file() -> None:
    _fails(Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "guitar.wav", "not a readable instrument file")


def test_missing_manifest(saved: Path) -> None:
    _, arrays = _raw(saved)
    _fails(_write(saved, arrays, None), "no sensorsynth manifest")


def test_other_safetensors_metadata(saved: Path) -> None:
    _, arrays = _raw(saved)
    save_file(arrays, str(saved), metadata={"format": "pt"})
    _fails(saved, "no sensorsynth manifest")


def test_manifest_not_json(saved: Path) -> None:
    _, arrays = _raw(saved)
    save_file(arrays, str(saved), metadata={METADATA_KEY: "{not json"})
    _fails(saved, "not valid JSON")


def test_wrong_format_name(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    _fails(_write(saved, arrays, {**manifest, "format": "something-else"}), "something-else")


def test_wrong_format_version(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    _fails(_write(saved, arrays, {**manifest, "format_version": 2}), "version 2")


def test_invalid_manifest_field(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    manifest["spec"]["n_resonances"] = -1
    _fails(_write(saved, arrays, manifest), "invalid manifest", "n_resonances")


def test_wrong_array_shape(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    arrays["router"] = np.zeros((5, 5), np.float32)
    _fails(_write(saved, arrays, manifest), "router", "shape")


def test_wrong_array_dtype(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    arrays["gains"] = arrays["gains"].astype(np.float64)
    _fails(_write(saved, arrays, manifest), "gains", "float32")


def test_missing_array(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    del arrays["deformations"]
    _fails(_write(saved, arrays, manifest), "missing arrays", "deformations")


def test_unexpected_array(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    arrays["payload"] = np.zeros(3, np.float32)
    _fails(_write(saved, arrays, manifest), "unexpected arrays", "payload")


@pytest.mark.parametrize("name", ["amplitude", "gains", "control_value"])
def test_nan_in_an_array(saved: Path, name: str) -> None:
    manifest, arrays = _raw(saved)
    arrays[name] = arrays[name].copy()
    arrays[name].reshape(-1)[0] = np.nan
    _fails(_write(saved, arrays, manifest), name)


def test_negative_control_value(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    assert arrays["control_value"].size
    arrays["control_value"] = arrays["control_value"].copy()
    arrays["control_value"][0] = -0.5
    _fails(_write(saved, arrays, manifest), "control_value", "non-negative")


def test_control_index_out_of_range(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    arrays["control_index"] = arrays["control_index"].copy()
    arrays["control_index"][-1] = SMALL.n_frames * SMALL.control_plane_dim
    _fails(_write(saved, arrays, manifest), "control_index")


def test_negative_frequency(saved: Path) -> None:
    manifest, arrays = _raw(saved)
    arrays["freq_hz"] = -np.abs(arrays["freq_hz"])
    _fails(_write(saved, arrays, manifest), "non-negative")


def test_silently_corrupted_array_bytes_fail_the_checksum(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-4] ^= 0x01  # lowest mantissa bit of the last float: still a finite, plausible number
    saved.write_bytes(bytes(data))
    _fails(saved, "checksum")


def test_saved_file_is_readable_by_others(saved: Path) -> None:
    assert saved.stat().st_mode & 0o044


def test_absurd_magnitudes_are_refused(tmp_path: Path, small: Instrument) -> None:
    arrays = {name: np.array(a, copy=True) for name, a in small.arrays().items()}
    arrays["amplitude"][0, 0, 0] = 1e30  # finite in float32, inf once the renderer squares it
    _fails(_write(tmp_path / "huge.instrument", arrays, json.loads(small.manifest.model_dump_json())), "amplitude")


def test_a_spec_asking_for_huge_buffers_is_refused(tmp_path: Path, small: Instrument) -> None:
    manifest = json.loads(small.manifest.model_dump_json())
    manifest["spec"]["n_samples"] = 2**33
    _fails(_write(tmp_path / "big.instrument", small.arrays(), manifest), "n_samples")
