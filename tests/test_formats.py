"""Text and subtitle renderings, and the per-channel dialogue merge."""

from __future__ import annotations

from callpipe_asr import formats
from callpipe_asr.transcript import Segment, Transcript, Word, merge_channel_transcripts


def _transcript() -> Transcript:
    return Transcript(
        segments=(
            Segment(" Hello there.", 0.0, 1.25, words=(Word(" Hello", 0.0, 0.5, 0.9), Word(" there.", 0.5, 1.25, 0.8))),
            Segment(" Call me --> back.", 3661.5, 3663.0),
            Segment(" ", 3663.0, 3664.0),
        ),
        language="en",
        duration=3664.0,
    )


def test_text_joins_segments_without_whisper_spaces() -> None:
    assert formats.to_text(_transcript()) == "Hello there. Call me --> back.\n"
    assert formats.to_text(Transcript(segments=(), language=None, duration=1.0)) == ""


def test_srt_numbers_cues_with_comma_milliseconds_and_skips_empty_ones() -> None:
    assert formats.to_srt(_transcript()) == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n01:01:01,500 --> 01:01:03,000\nCall me -> back.\n"
    )


def test_vtt_has_header_and_dot_milliseconds() -> None:
    vtt = formats.to_vtt(_transcript())
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n")
    assert vtt.endswith("01:01:01.500 --> 01:01:03.000\nCall me -&gt; back.\n")  # cue text cannot hold "-->"


def test_vtt_escapes_markup_characters() -> None:
    transcript = Transcript(segments=(Segment(" <b>Tom & Jerry</b>", 0.0, 1.0),), language="en", duration=1.0)
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in formats.to_vtt(transcript)


def test_channels_merge_into_one_dialogue_ordered_by_time() -> None:
    caller = Transcript(segments=(Segment(" Hi, it's Ann.", 0.5, 1.5), Segment(" Bye.", 6.0, 6.5)), language="en", duration=7.0)
    callee = Transcript(segments=(Segment(" Hello?", 0.0, 0.4), Segment(" Sure.", 3.0, 3.5)), language="en", duration=7.2)
    dialogue = merge_channel_transcripts([caller, callee])
    assert [(s.channel, s.text.strip()) for s in dialogue.segments] == [
        (1, "Hello?"), (0, "Hi, it's Ann."), (1, "Sure."), (0, "Bye."),
    ]
    assert dialogue.channels == 2 and dialogue.duration == 7.2
    assert dialogue.text.splitlines()[0] == "[channel 1] Hello?"
    assert "[channel 0] Hi, it's Ann." in formats.to_srt(dialogue)


def test_transcript_round_trips_through_its_dict() -> None:
    transcript = _transcript()
    assert Transcript.from_dict(transcript.to_dict()) == transcript


def test_options_of_a_job_stored_by_another_version_read_back() -> None:
    """Older rows lack newer keys (their defaults apply); newer rows may carry keys this version
    does not know (a rolling upgrade): both still run."""
    from callpipe_asr.transcript import RecognitionOptions, Task

    options = RecognitionOptions(language="de", task=Task.TRANSLATE, word_timestamps=False, segment_timestamps=False)
    assert RecognitionOptions.from_dict(options.to_dict()) == options
    old_row = {k: v for k, v in options.to_dict().items() if k != "segment_timestamps"}
    assert RecognitionOptions.from_dict(old_row).segment_timestamps is True
    assert RecognitionOptions.from_dict({**options.to_dict(), "diarize": True}) == options
