"""Rosbag2 (MCAP) tools for voice_agent's audio topic.

    python scripts/bag.py make OUT_DIR a.wav b.wav ... [--text "ref a" --text "ref b"] [--gap 2.0]
    python scripts/bag.py play BAG_DIR [--rate 2.0] [--clock] [--topic /audio]
    python scripts/bag.py info BAG_DIR

`make` writes a rosbag2 bag directory (metadata.yaml + one .mcap file) with
voice_agent/msg/AudioFrame on /audio in 20 ms frames, silence between the
WAVs, the message definitions embedded, and the reference transcripts in the
bag's custom_data, so `ros2 bag play` on a robot plays it and the evaluation
can score it. MCAP is written with the mcap library (mcap-ros2-support for
CDR); the tests read the result back with the independent `rosbags` library.

`play` publishes the bag's audio with its recorded timing (optionally faster)
and, with --clock, /clock for nodes running with use_sim_time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from va_harness import ROOT, read_wav  # noqa: E402

AUDIO_TYPE = "voice_agent/msg/AudioFrame"
FRAME_S = 0.02


class BagError(Exception):
    """The bag cannot be used; the message says why."""


def msgdef() -> str:
    """AudioFrame's definition with its dependencies, in ros2msg concatenated form."""
    sep = "=" * 80
    return "\n".join([
        (ROOT / "msg" / "AudioFrame.msg").read_text().strip(),
        sep, "MSG: std_msgs/Header", "builtin_interfaces/Time stamp\nstring frame_id",
        sep, "MSG: builtin_interfaces/Time", "int32 sec\nuint32 nanosec",
    ]) + "\n"


def metadata_yaml(name: str, topic: str, start_ns: int, end_ns: int, count: int, refs: list[str]) -> str:
    import yaml
    # The MCAP channels carry no QoS metadata, so the topic offers none either
    # (ros2 bag play then uses its default QoS; readers match the two).
    qos = ""
    info = {"rosbag2_bagfile_information": {
        "version": 8,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": end_ns - start_ns},
        "starting_time": {"nanoseconds_since_epoch": start_ns},
        "message_count": count,
        "topics_with_message_count": [{
            "topic_metadata": {"name": topic, "type": AUDIO_TYPE, "serialization_format": "cdr",
                               "offered_qos_profiles": qos, "type_description_hash": ""},
            "message_count": count}],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [name],
        "files": [{"path": name, "starting_time": {"nanoseconds_since_epoch": start_ns},
                   "duration": {"nanoseconds": end_ns - start_ns}, "message_count": count}],
        "custom_data": {"voice_agent.references": json.dumps(refs)},
        "ros_distro": "jazzy",
    }}
    return yaml.safe_dump(info, sort_keys=False)


def make(out: Path, wavs: list[Path], texts: list[str], gap: float = 2.0, topic: str = "/audio",
         start_ns: int | None = None, tail: float | None = None) -> Path:
    """A bag of the WAVs said one after another, `gap` s of silence around
    each (half before, half after); `tail` s after the last one instead
    (a bag that ends right after the speech)."""
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer
    out.mkdir(parents=True, exist_ok=True)
    name = f"{out.name}_0.mcap"
    start_ns = start_ns or time.time_ns()
    t = start_ns
    count = 0
    with open(out / name, "wb") as f:
        w = Writer(f, compression=CompressionType.NONE)
        schema = w.register_msgdef(AUDIO_TYPE, msgdef())

        def write_block(x: np.ndarray, rate: int):
            nonlocal t, count
            n = int(rate * FRAME_S)
            for i in range(0, len(x), n):
                block = x[i:i + n]
                msg = {"header": {"stamp": {"sec": t // 1_000_000_000, "nanosec": t % 1_000_000_000},
                                  "frame_id": "mic"},
                       "sample_rate": rate, "channels": 1, "encoding": "S16LE",
                       "data": (np.clip(block, -1, 1) * 32767).astype("<i2").tobytes(), "turn_id": ""}
                w.write_message(topic, schema, msg, log_time=t, publish_time=t, sequence=count)
                count += 1
                t += int(len(block) / rate * 1e9)

        for k, wav in enumerate(wavs):
            x, rate = read_wav(wav)
            after = tail if tail is not None and k + 1 == len(wavs) else gap / 2
            write_block(np.zeros(int(rate * gap / 2), np.float32), rate)
            write_block(x.mean(axis=1).astype(np.float32), rate)
            write_block(np.zeros(int(rate * after), np.float32), rate)
        w.finish()
    (out / "metadata.yaml").write_text(metadata_yaml(name, topic, start_ns, t, count, texts))
    return out


def read_audio(bag: Path, topic: str = "/audio"):
    """Yields (log_time_ns, message) of the bag's AudioFrames; BagError when unusable."""
    from mcap.exceptions import McapError
    from mcap_ros2.reader import read_ros2_messages
    bag = Path(bag)
    files = sorted(bag.glob("*.mcap")) if bag.is_dir() else [bag]
    if not files or not files[0].exists():
        raise BagError(f"{bag}: no .mcap file found")
    seen_topic = False
    try:
        for f in files:
            for m in read_ros2_messages(str(f)):
                if m.channel.topic != topic:
                    continue
                seen_topic = True
                if m.schema.name != AUDIO_TYPE:
                    raise BagError(f"{f}: topic {topic} carries {m.schema.name}, not {AUDIO_TYPE}")
                yield m.log_time_ns, m.ros_msg
    except BagError:
        raise
    except (McapError, EOFError, ValueError, KeyError, struct_error()) as e:
        raise BagError(f"{bag}: corrupt or truncated MCAP ({type(e).__name__}: {e})") from e
    if not seen_topic:
        raise BagError(f"{bag}: no messages on {topic}")


def struct_error():
    import struct
    return struct.error


def references(bag: Path) -> list[str]:
    import yaml
    meta = Path(bag) / "metadata.yaml"
    if not meta.exists():
        return []
    info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    return json.loads(info.get("custom_data", {}).get("voice_agent.references", "[]"))


def play(h, bag: Path, rate: float = 1.0, clock: bool = False, topic: str = "/audio", pub=None):
    """Publishes the bag's audio through harness `h` at its recorded pace."""
    from rosgraph_msgs.msg import Clock
    from voice_agent.msg import AudioFrame
    from rclpy.qos import qos_profile_sensor_data
    frames = list(read_audio(bag, topic))  # validates the whole bag before publishing anything
    pub = pub or h.node.create_publisher(AudioFrame, topic, qos_profile_sensor_data)
    clock_pub = h.node.create_publisher(Clock, "/clock", 10) if clock else None
    t_bag0 = frames[0][0]
    t0 = time.monotonic()
    for t_ns, m in frames:
        due = t0 + (t_ns - t_bag0) / 1e9 / rate
        while time.monotonic() < due:
            h.executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        if clock_pub:
            c = Clock()
            c.clock.sec, c.clock.nanosec = t_ns // 1_000_000_000, t_ns % 1_000_000_000
            clock_pub.publish(c)
        msg = AudioFrame()
        msg.header.stamp.sec = m.header.stamp.sec
        msg.header.stamp.nanosec = m.header.stamp.nanosec
        msg.header.frame_id = m.header.frame_id
        msg.sample_rate, msg.channels, msg.encoding = m.sample_rate, m.channels, m.encoding
        msg.data = bytes(m.data)
        msg.turn_id = m.turn_id
        pub.publish(msg)
    return len(frames)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("out", type=Path)
    mk.add_argument("wavs", type=Path, nargs="+")
    mk.add_argument("--text", action="append", default=[], help="reference transcript per WAV")
    mk.add_argument("--gap", type=float, default=2.0)
    pl = sub.add_parser("play")
    pl.add_argument("bag", type=Path)
    pl.add_argument("--rate", type=float, default=1.0)
    pl.add_argument("--clock", action="store_true")
    pl.add_argument("--topic", default="/audio")
    inf = sub.add_parser("info")
    inf.add_argument("bag", type=Path)
    args = ap.parse_args()
    try:
        if args.cmd == "make":
            print(make(args.out, args.wavs, args.text, args.gap))
        elif args.cmd == "info":
            frames = list(read_audio(args.bag))
            dur = (frames[-1][0] - frames[0][0]) / 1e9
            print(f"{args.bag}: {len(frames)} AudioFrames, {dur:.1f} s, references {references(args.bag)}")
        else:
            from va_harness import Harness, pick_domain
            h = Harness(pick_domain(from_env=True), Path("/tmp"))
            try:
                n = play(h, args.bag, args.rate, args.clock, args.topic)
                print(f"played {n} frames")
            finally:
                h.close()
    except BagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
