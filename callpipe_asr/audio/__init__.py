"""Audio: find the format from the bytes, enforce limits, decode and normalise to 16 kHz."""

from .decode import AudioInfo, AudioLimits, TARGET_SAMPLE_RATE_HZ, decode_audio, probe_audio

__all__ = ["AudioInfo", "AudioLimits", "TARGET_SAMPLE_RATE_HZ", "decode_audio", "probe_audio"]
