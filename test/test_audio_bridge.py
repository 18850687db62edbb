"""audio_bridge: voice_agent with the audio drivers robots already run
(ros-drivers audio_common). Capture as audio_capture publishes it
(AudioDataStamped + latched AudioInfo, here a 48 kHz stereo USB microphone)
becomes `audio` and is transcribed; the robot's speech on `audio_out`
becomes AudioData for audio_play. audio_common_msgs is the test-only copy
in test/interfaces (same definitions as released)."""
import time

import numpy as np
import pytest
from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from diagnostic_msgs.msg import DiagnosticArray
from voice_agent.msg import AudioFrame, Utterance

from va_harness import VAD_MODEL, WHISPER_MODEL, diag_value, latched, reliable, utterance, wer

SENTENCE = "Please bring me a glass of water from the kitchen."


def stereo_48k(x16k: np.ndarray) -> np.ndarray:
    n = len(x16k) * 3
    up = np.interp(np.arange(n) / 3.0, np.arange(len(x16k)), x16k).astype(np.float32)
    return np.stack([up, up * 0.8], axis=1)


@pytest.mark.parametrize("info_after_s", [0.0, 1.2], ids=["info-first", "frames-before-info"])
def test_audio_common_capture_is_transcribed(ros, tmp_path, info_after_s):
    """A 48 kHz stereo capture becomes `audio` with the driver's stamps and is
    transcribed, also when its first frames reach the bridge before the
    latched AudioInfo (a subscriber can match the data topic first): those
    are held and bridged in order, not refused."""
    bridge = ros.start("audio_bridge", params={"output": False})
    stt = ros.start("stt_node", params={"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "n_threads": 2})
    heard = ros.collect(Utterance, "/transcript")
    frames = ros.collect(AudioFrame, "/audio", reliable(500))
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    info = ros.node.create_publisher(AudioInfo, "/audio_info", latched())
    data = ros.node.create_publisher(AudioDataStamped, "/audio_stamped", reliable(100))
    ros.wait_matched(data, timeout=30)
    ros.wait_matched(info, timeout=30)
    ros.wait_publisher("/transcript", timeout=60)
    x = np.concatenate([np.zeros(8000, np.float32), utterance(tmp_path, SENTENCE, "water"),
                        np.zeros(24000, np.float32)])
    pcm = (np.clip(stereo_48k(x), -1, 1) * 32767).astype("<i2")
    block = 4800  # 100 ms, as audio_capture's buffers
    t0 = time.time()
    sent_info = False
    for k, i in enumerate(range(0, len(pcm), block)):
        if not sent_info and k * 0.1 >= info_after_s:
            info.publish(AudioInfo(channels=2, sample_rate=48000, sample_format="S16LE", bitrate=48000 * 32,
                                   coding_format="wave"))
            sent_info = True
        m = AudioDataStamped()
        s = t0 + k * 0.1
        m.header.stamp.sec, m.header.stamp.nanosec = int(s), int((s % 1) * 1e9)
        m.audio = AudioData(data=pcm[i:i + block].tobytes())
        data.publish(m)
        ros.spin_for(0.1)
    ros.wait_for(lambda: heard, 30, "transcript", [stt])
    assert wer(SENTENCE, heard[0].text) <= 0.2, heard[0].text
    f = frames[0]
    assert (f.sample_rate, f.channels, f.encoding) == (48000, 2, "S16LE")
    assert abs(f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 - t0) < 1e-3  # the driver's stamp
    stamps = [f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in frames]
    assert np.allclose(np.diff(stamps), 0.1, atol=1e-3), "frames lost or out of order"
    held = "frames_held_before_info"
    ros.wait_for(lambda: diag_value(diags, "audio_bridge", held, -1) >= 0, 5, "bridge diagnostics", [bridge])
    if info_after_s:
        assert diag_value(diags, "audio_bridge", held) >= 10, "the early frames were not held"
    assert diag_value(diags, "audio_bridge", "frames_refused") == 0


def test_encoded_capture_is_refused_with_the_fix(ros):
    bridge = ros.start("audio_bridge", params={"output": False})
    frames = ros.collect(AudioFrame, "/audio", reliable(500))
    info = ros.node.create_publisher(AudioInfo, "/audio_info", latched())
    data = ros.node.create_publisher(AudioDataStamped, "/audio_stamped", reliable(100))
    ros.wait_matched(data, timeout=30)
    info.publish(AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE", bitrate=192, coding_format="mp3"))
    ros.spin_for(1.0)
    for _ in range(5):
        data.publish(AudioDataStamped(audio=AudioData(data=bytes(640))))
    ros.wait_for(lambda: "format: wave" in bridge.log(), 10, "the refusal in the log", [bridge])
    assert frames == []


def test_audio_out_becomes_audio_data_for_audio_play(ros):
    ros.start("audio_bridge", params={"input": False, "output_sample_rate": 16000})
    got = ros.collect(AudioData, "/audio_out_data", reliable(500))
    infos = ros.collect(AudioInfo, "/audio_out_info", latched())
    out = ros.node.create_publisher(AudioFrame, "/audio_out", reliable(500))
    ros.wait_matched(out, timeout=30)
    rate = 22050  # Piper's rate
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    pcm = (x * 32767).astype("<i2")
    for i in range(0, rate, rate // 25):  # 40 ms frames at real-time pace, as tts_node sends them
        out.publish(AudioFrame(sample_rate=rate, channels=1, encoding="S16LE", data=pcm[i:i + rate // 25].tobytes(),
                               turn_id="t1"))
        ros.spin_for(0.04)
    # all of it, the resampler's tail flushed when the speech stopped
    ros.wait_for(lambda: infos and sum(len(m.data) for m in got) >= 2 * 15800, 10, "bridged audio")
    i = infos[-1]
    assert (i.channels, i.sample_rate, i.sample_format, i.coding_format) == (1, 16000, "S16LE", "wave")
    y = np.frombuffer(b"".join(bytes(m.data) for m in got), "<i2").astype(np.float32) / 32768
    # one second of 440 Hz at 16 kHz: the tone survives resampling
    spec = np.abs(np.fft.rfft(y[2000:14000]))
    peak_hz = np.argmax(spec) * 16000 / 12000
    assert abs(peak_hz - 440) < 5, peak_hz
    assert 0.25 < np.abs(y).max() < 0.35
