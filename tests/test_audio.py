"""read_clip / write_wav on real audio: every format, rate, layout and broken input a user can bring."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from sensorsynth.audio import AudioInputError, AudioOutputError, Clip, read_clip, write_wav

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
RATE, N = 22050, 2**17


@pytest.fixture(scope="module")
def guitar() -> np.ndarray:
    """The guitar clip as float64 at 22050 Hz, peak 1 (what read_clip must return for it)."""
    data, rate = sf.read(AUDIO / "guitar.wav", dtype="float64")
    assert rate == RATE and data.shape == (N,)
    return data / np.max(np.abs(data))


def _check_clip(clip: Clip) -> None:
    assert isinstance(clip, Clip)
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (N,)
    assert np.max(np.abs(clip.samples)) == pytest.approx(1.0, abs=1e-6)
    assert clip.sample_rate == RATE


@pytest.mark.parametrize("name", ["guitar", "piano", "marimba"])
def test_native_clip_is_unchanged_and_described(name: str) -> None:
    path = AUDIO / f"{name}.wav"
    clip = read_clip(path)
    _check_clip(clip)
    assert clip.messages == []
    raw, _ = sf.read(path, dtype="float64")
    np.testing.assert_allclose(clip.samples, raw / np.max(np.abs(raw)), atol=1e-6)
    assert clip.source.name == f"{name}.wav"
    assert clip.source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert clip.source.sample_rate == RATE and clip.source.channels == 1
    assert clip.source.duration_s == pytest.approx(N / RATE, abs=1e-4)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_other_rates_are_resampled_back(tmp_path: Path, guitar: np.ndarray, rate: int) -> None:
    up = resample_poly(guitar, rate // 50, RATE // 50) if rate == 48000 else resample_poly(guitar, 2, 1)
    path = tmp_path / f"guitar_{rate}.wav"
    sf.write(path, (0.5 * up).astype(np.float32), rate, subtype="FLOAT")
    clip = read_clip(path)
    _check_clip(clip)
    assert f"resampled {rate} → 22050 Hz" in clip.messages
    assert not any("padded" in m or "cut" in m for m in clip.messages), clip.messages
    assert clip.source.sample_rate == rate
    assert clip.source.duration_s == pytest.approx(N / RATE, abs=1e-3)
    # Up and back down through polyphase filters: nearly identical except right at Nyquist.
    err = clip.samples - guitar
    assert np.corrcoef(clip.samples, guitar)[0, 1] > 0.999
    assert np.sqrt(np.mean(err**2)) < 0.01


def test_stereo_is_mixed_to_mono(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([guitar, 0.5 * guitar], axis=1).astype(np.float32) * 0.9, RATE, subtype="FLOAT")
    clip = read_clip(path)
    _check_clip(clip)
    assert clip.messages == ["mixed 2 channels down to mono"]
    assert clip.source.channels == 2
    np.testing.assert_allclose(clip.samples, guitar, atol=1e-5)


def test_multichannel_at_another_rate_reports_both(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "quad.wav"
    quad = np.stack([guitar] * 4, axis=1)[::2]  # every other sample: 11025 Hz
    sf.write(path, (0.25 * quad).astype(np.float32), RATE // 2, subtype="FLOAT")
    clip = read_clip(path)
    _check_clip(clip)
    assert clip.messages[:2] == ["mixed 4 channels down to mono", "resampled 11025 → 22050 Hz"]
    assert clip.source.channels == 4


def test_flac_is_lossless(tmp_path: Path, guitar: np.ndarray) -> None:
    if "FLAC" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write FLAC")
    path = tmp_path / "guitar.flac"
    raw, _ = sf.read(AUDIO / "guitar.wav", dtype="int16")
    sf.write(path, raw, RATE, subtype="PCM_16")
    clip = read_clip(path)
    _check_clip(clip)
    assert clip.messages == []
    np.testing.assert_allclose(clip.samples, guitar, atol=1e-6)


def test_ogg_vorbis_is_read(tmp_path: Path, guitar: np.ndarray) -> None:
    if "VORBIS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile cannot write Ogg Vorbis")
    path = tmp_path / "guitar.ogg"
    sf.write(path, (0.8 * guitar).astype(np.float32), RATE, format="OGG", subtype="VORBIS")
    clip = read_clip(path)
    _check_clip(clip)
    assert np.corrcoef(clip.samples, guitar)[0, 1] > 0.98  # lossy, but the same sound


def test_short_clip_is_padded_with_a_message(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, guitar[: 2 * RATE].astype(np.float32), RATE, subtype="FLOAT")
    clip = read_clip(path)
    _check_clip(clip)
    gap = (N - 2 * RATE) / RATE
    assert clip.messages == [f"padded {gap:.2f} s of silence at the end"]
    assert clip.source.duration_s == pytest.approx(2.0)
    peak = np.max(np.abs(guitar[: 2 * RATE]))
    np.testing.assert_allclose(clip.samples[: 2 * RATE], guitar[: 2 * RATE] / peak, atol=1e-6)
    assert not np.any(clip.samples[2 * RATE :])


def test_long_clip_is_cut_with_a_message(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(guitar, 5).astype(np.float32), RATE, subtype="FLOAT")  # ~30 s
    clip = read_clip(path)
    _check_clip(clip)
    assert len(clip.messages) == 1 and clip.messages[0].startswith("cut to the first 5.94 s")
    assert clip.source.duration_s == pytest.approx(5 * N / RATE)
    np.testing.assert_allclose(clip.samples, guitar, atol=1e-6)


def test_long_clip_at_another_rate_is_cut_after_resampling(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "long44.wav"
    sf.write(path, resample_poly(np.tile(guitar, 3), 2, 1).astype(np.float32), 2 * RATE, subtype="FLOAT")
    clip = read_clip(path)
    _check_clip(clip)
    assert "resampled 44100 → 22050 Hz" in clip.messages
    assert any(m.startswith("cut to the first 5.94 s") for m in clip.messages)
    assert np.corrcoef(clip.samples, guitar)[0, 1] > 0.999


# ------------------------------------------------------------------------------------------ bad input


def _error(path: Path, *fragments: str) -> AudioInputError:
    with pytest.raises(AudioInputError) as info:
        read_clip(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)
    return info.value


def test_all_zero_clip_is_silent(tmp_path: Path) -> None:
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(RATE, np.float32), RATE)
    _error(path, "silent", "all zeros")


def test_clip_below_minus_100_dbfs_is_silent(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "whisper.wav"
    sf.write(path, (guitar * 1e-6).astype(np.float32), RATE, subtype="FLOAT")
    _error(path, "silent", "dBFS")


def test_clip_silent_where_it_is_used_is_silent(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "late.wav"
    sf.write(path, np.concatenate([np.zeros(2 * N), guitar]).astype(np.float32), RATE, subtype="FLOAT")
    _error(path, "silent in its first 5.94 s")


def test_stereo_that_cancels_out_is_silent(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "cancel.wav"
    sf.write(path, np.stack([guitar, -guitar], axis=1).astype(np.float32), RATE, subtype="FLOAT")
    _error(path, "silent")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, guitar: np.ndarray, bad: float) -> None:
    data = guitar.astype(np.float32)
    data[1000] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, data, RATE, subtype="FLOAT")
    _error(path, "NaN or infinite")


def test_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), RATE)
    assert path.stat().st_size > 0  # a header and nothing else
    _error(path, "0 frames")


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    path.write_bytes(b"")
    _error(path, "empty (0 bytes)")


def test_garbage_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _error(path, "not a readable audio file")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio\n" * 100)
    _error(path, "not a readable audio file")


def test_missing_path(tmp_path: Path) -> None:
    _error(tmp_path / "nope.wav", "no such file")


def test_directory(tmp_path: Path) -> None:
    _error(tmp_path, "is a directory")


# ------------------------------------------------------------------------------------------ write_wav


def test_write_wav_round_trip_creates_parents(tmp_path: Path, guitar: np.ndarray) -> None:
    path = tmp_path / "deep" / "er" / "out.wav"
    write_wav(path, (0.5 * guitar).astype(np.float32), RATE)
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "PCM_16", RATE, 1, N)
    back, _ = sf.read(path, dtype="float64")
    np.testing.assert_allclose(back, 0.5 * guitar, atol=1 / 2**15)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left behind


def test_write_wav_clips_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    write_wav(path, np.zeros(100, np.float32), 8000)
    write_wav(path, np.array([2.0, -3.0, 0.25], np.float32), 8000)
    back, rate = sf.read(path, dtype="float64")
    assert rate == 8000
    np.testing.assert_allclose(back, [32767 / 32768, -1.0, 0.25], atol=1e-4)


def test_write_wav_rejects_bad_samples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32), RATE)
    with pytest.raises(ValueError, match="non-empty"):
        write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    assert list(tmp_path.iterdir()) == []


def test_write_wav_unwritable_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "out.wav"  # its parent is a file
    with pytest.raises(AudioOutputError, match="cannot write") as info:
        write_wav(target, np.zeros(10, np.float32), RATE)
    assert str(target) in str(info.value)
    with pytest.raises(AudioOutputError, match="is a directory"):
        write_wav(tmp_path, np.zeros(10, np.float32), RATE)


# ----------------------------------------------------------------------------- header limits (issue 19)


def _flac(rate: int, channels: int, seconds: float) -> bytes:
    """Silence as FLAC: a few kB whatever the rate, channels and length its header declares."""
    import io

    out = io.BytesIO()
    sf.write(out, np.zeros((int(rate * seconds), channels), np.int16), rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A 44-byte WAV header (16-bit PCM) declaring ``data_bytes`` of data, followed by none of it."""
    import struct

    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * block, block, 16) + b"data" + struct.pack("<I", data_bytes))  # fmt: skip


def test_check_header_refuses_rate_channels_and_size_before_decoding(tmp_path: Path) -> None:
    import io

    from sensorsynth.audio import UPLOAD_LIMITS, check_header

    bomb = _flac(655350, 8, 0.5)  # the FLAC bomb: 2.8 kB that decodes to 40 MiB as float64
    assert len(bomb) < 8192
    with pytest.raises(AudioInputError, match=r"^the clip: 655350 Hz is above the 96000 Hz accepted"):
        check_header(io.BytesIO(bomb))
    with pytest.raises(AudioInputError, match=r"^take.flac: 8 channels; at most 2 are accepted"):
        check_header(io.BytesIO(_flac(48000, 8, 0.1)), name="take.flac")
    with pytest.raises(AudioInputError, match=r"4800000 frames × 2 channels \(50.0 s at 96000 Hz\) is more than the "
                                              r"8388608 samples accepted"):  # fmt: skip
        check_header(io.BytesIO(_flac(96000, 2, 50)))
    with pytest.raises(AudioInputError, match=r"not a readable audio file"):
        check_header(io.BytesIO(b"RIFF not really"))
    ok = io.BytesIO(_flac(48000, 2, 1.0))
    ok.seek(3)
    info = check_header(ok)
    assert (info.samplerate, info.channels, info.frames, ok.tell()) == (48000, 2, 48000, 3)  # position kept
    path = tmp_path / "ok.wav"
    sf.write(path, np.zeros((4800, 1), np.float32), 48000)
    assert check_header(path, UPLOAD_LIMITS).channels == 1 and check_header(str(path)).samplerate == 48000


def test_a_header_declaring_gigabytes_is_refused_in_kilobytes(tmp_path: Path) -> None:
    """Header-only WAV and FLAC bombs, in a fresh process: refused by check_header and by read_clip with the
    upload limits, while peak RSS grows by under 8 MiB (decoding the FLAC alone would take 40 MiB)."""
    import subprocess
    import sys

    wav = tmp_path / "huge.wav"
    wav.write_bytes(_wav_header(384000, 64, 2**31))  # 44 bytes declaring 2 GiB: 64 channels at 384 kHz
    flac = tmp_path / "bomb.flac"
    flac.write_bytes(_flac(655350, 8, 0.5))
    code = (
        "import resource, sys\n"
        "from sensorsynth.audio import AudioInputError, UPLOAD_LIMITS, check_header, read_clip\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for p in sys.argv[1:]:\n"
        "    for f in (lambda: check_header(p), lambda: read_clip(p, limits=UPLOAD_LIMITS)):\n"
        "        try:\n"
        "            f()\n"
        "        except AudioInputError as exc:\n"
        "            print(exc)\n"
        "        else:\n"
        "            raise SystemExit(f'{p} accepted')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(wav), str(flac)], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stdout + r.stderr
    *messages, grew = r.stdout.strip().splitlines()
    assert len(messages) == 4 and all("accepted" in m or "not a readable" in m for m in messages), messages
    assert "655350 Hz is above the 96000 Hz accepted" in messages[2], messages
    assert int(grew) < 8 * 1024, f"peak RSS grew by {grew} kiB"


def test_read_clip_bounds_what_it_decodes(tmp_path: Path) -> None:
    from sensorsynth.audio import LOCAL_LIMITS, AudioLimits

    path = tmp_path / "multi.flac"
    tone = np.sin(np.arange(48000) * 0.05)[:, None] * np.ones((1, 8)) * 0.5
    sf.write(path, tone, 48000, format="FLAC", subtype="PCM_16")
    clip = read_clip(path, limits=LOCAL_LIMITS)  # a local multichannel recording still fits
    assert "mixed 8 channels down to mono" in clip.messages
    tight = AudioLimits(max_channels=8, max_decoded_samples=100_000)
    with pytest.raises(AudioInputError, match=r"decode 384000 samples \(8 channels at 48000 Hz\); at most 100000"):
        read_clip(path, limits=tight)


def test_a_clip_from_the_wire_is_read_within_the_wire_limits() -> None:
    from sensorsynth.instrument.pipeline import read_clip_bytes
    from sensorsynth.instrument.spec import ModelSpec

    with pytest.raises(AudioInputError, match=r"^bomb.flac: 655350 Hz is above the 192000 Hz accepted"):
        read_clip_bytes(_flac(655350, 8, 0.5), "bomb.flac", ModelSpec())
