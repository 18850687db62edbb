"""Rosbag2 MCAP bags of audio: written by scripts/bag.py, read back by the
independent `rosbags` library, replayed through the running pipeline by
scripts/evaluate.py (real time and 2x with sim time), bad bags refused."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from va_harness import ROOT, clause_audio, speak, with_pauses, write_wav

sys.path.insert(0, str(ROOT / "scripts"))
import bag as bagtool  # noqa: E402

REFS = [
    "What color is the sky on a clear day?",
    "Please go to the kitchen and bring me a glass of water.",
    "The robot should stop near the charging station.",
]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    wavs = [speak(t, d / f"u{i}.wav") for i, t in enumerate(REFS)]
    return bagtool.make(d / "three", wavs, REFS, gap=3.0)


def test_rosbags_reads_the_bag(three):
    with AnyReader([three], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        assert [(c.topic, c.msgtype) for c in r.connections] == [("/audio", "voice_agent/msg/AudioFrame")]
        msgs = list(r.messages())
        assert len(msgs) == r.message_count > 100
        stamps = [t for _, t, _ in msgs]
        assert stamps == sorted(stamps)
        m = r.deserialize(msgs[0][2], msgs[0][0].msgtype)
        assert (m.sample_rate, m.channels, m.encoding, len(m.data)) == (16000, 1, "S16LE", 640)
        total = sum(len(r.deserialize(raw, c.msgtype).data) for c, _, raw in msgs) / 2 / 16000
        assert abs(total - (r.duration / 1e9)) < 0.1
    assert bagtool.references(three) == REFS


def evaluate(out, *args):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=400)
    return r, (json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None)


@pytest.mark.parametrize("rate,sim", [(1.0, False), (2.0, True)], ids=["realtime", "2x-simtime"])
def test_bag_replay_gives_three_turns_with_correct_transcripts(three, tmp_path, rate, sim):
    r, rep = evaluate(tmp_path, "--bags", str(three), "--rate", str(rate), *(["--sim-time"] if sim else []))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(rep["turns"]) == 3
    for t in rep["turns"]:
        assert t["wer"] <= 0.25, t
        assert t["reply"].strip()
        assert t["end_of_speech_to_first_audio_ms"] > 0
    assert (tmp_path / "report.md").read_text().count("\n| ") >= 3 + 4
    assert (tmp_path / "latency.png").stat().st_size > 5000


def test_a_bag_that_ends_right_after_the_request_still_gets_its_turn(tmp_path):
    """The bag's last request (a pause inside it) is followed by 0.25 s of
    silence, then the bag ends: stt_node counts the time with no frames as
    silence, so the request is answered (before, it never was)."""
    clauses = ["Please go to the kitchen,", "and bring me a glass of water."]
    wav = tmp_path / "request.wav"
    write_wav(wav, with_pauses(clause_audio(clauses, tmp_path / "voice"), [0.7]), 16000)
    b = bagtool.make(tmp_path / "ends", [wav], [" ".join(clauses)], gap=1.0, tail=0.25)
    r, rep = evaluate(tmp_path / "eval", "--bags", str(b), "--timeout", "60")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(rep["turns"]) == 1, rep
    t = rep["turns"][0]
    assert t["wer"] <= 0.3 and t["reply"].strip(), t


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bag.py"), *args], capture_output=True, text=True,
                          timeout=60)


def test_bad_bags_fail_cleanly(three, tmp_path):
    mcap = next(three.glob("*.mcap"))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "t_0.mcap").write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    raw = bytearray(mcap.read_bytes())
    raw[100:4000] = b"\xff" * 3900
    (corrupt / "c_0.mcap").write_bytes(bytes(raw))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "g_0.mcap").write_bytes(b"not an mcap file at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    other_topic = bagtool.make(tmp_path / "other", [speak("hello", tmp_path / "h.wav")], ["hello"], topic="/mic")
    wrong_type = tmp_path / "wrong_type"
    wrong_type.mkdir()
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer
    with open(wrong_type / "w_0.mcap", "wb") as f:
        w = Writer(f, compression=CompressionType.NONE)
        s = w.register_msgdef("std_msgs/msg/String", "string data")
        w.write_message("/audio", s, {"data": "hi"}, log_time=1, publish_time=1)
        w.finish()
    cases = {truncated: "corrupt or truncated", corrupt: "corrupt or truncated", garbage: "corrupt or truncated",
             empty: "no .mcap file", other_topic: "no messages on /audio", wrong_type: "not voice_agent/msg/AudioFrame"}
    for b, why in cases.items():
        r = run_tool("info", str(b))
        assert r.returncode == 2, (b, r.stdout, r.stderr)
        assert why in r.stderr and str(b.name) in r.stderr, (b, r.stderr)
        assert "Traceback" not in r.stderr
    # the evaluation refuses them the same way, before starting any node
    r, _ = evaluate(tmp_path / "eval", "--bags", str(wrong_type))
    assert r.returncode == 2 and "not voice_agent/msg/AudioFrame" in r.stderr
    shutil.rmtree(tmp_path / "eval", ignore_errors=True)
