"""ROS 2 helpers shared by the integration tests (test/conftest.py), the
demo and the benchmarks: node executables as child processes on a chosen ROS
domain, an rclpy node that waits for matching and messages instead of
sleeping, and audio helpers (WAV I/O, espeak-ng speech, microphone-like
AudioFrame publishing, word error rate).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = Path(os.environ.get("VOICE_AGENT_BIN", TARGET / "release"))
MODELS = Path(os.environ.get("VOICE_AGENT_MODELS", Path.home() / ".cache/voice_agent/models"))
WHISPER_MODEL = MODELS / "ggml-tiny.en.bin"
VAD_MODEL = MODELS / "ggml-silero-v6.2.3.bin"
LLM_MODEL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
PIPER_VOICE = MODELS / "en_US-joe-medium.onnx"
ONNXRUNTIME = MODELS / "libonnxruntime.so.1.32.0"


class HarnessError(RuntimeError):
    """A wait timed out or a node died; the message carries the node logs."""


def reliable(depth=100):
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def latched():
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class NodeProcess:
    """A node executable run as a child process on the test's ROS domain."""

    def __init__(self, exe: str, domain: int, params: dict | None = None, remaps: dict | None = None,
                 log_dir: Path | None = None, name: str | None = None, extra_args: list[str] | None = None):
        # params files first: a later -p overrides a file's value
        args = [str(BIN / exe), "--ros-args", *(extra_args or [])]
        for k, v in (params or {}).items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            args += ["-p", f"{k}:={v}"]
        for k, v in (remaps or {}).items():
            args += ["-r", f"{k}:={v}"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), RCUTILS_COLORIZED_OUTPUT="0")
        self.name = name or exe
        self.log_path = (log_dir or Path("/tmp")) / f"{self.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Harness:
    """The test's own rclpy node plus the processes it started."""

    def __init__(self, domain: int, log_dir: Path):
        self.domain = domain
        self.log_dir = log_dir
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("test_harness", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.procs: list[NodeProcess] = []

    def start(self, exe: str, **kw) -> NodeProcess:
        p = NodeProcess(exe, self.domain, log_dir=self.log_dir, **kw)
        self.procs.append(p)
        return p

    def spin_for(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def wait_for(self, cond, timeout: float, what: str, procs: list[NodeProcess] | None = None):
        """Spins until cond() is true; fails with the node logs otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            self.executor.spin_once(timeout_sec=0.02)
            for p in procs if procs is not None else self.procs:
                if not p.alive():
                    raise HarnessError(f"{p.name} exited ({p.proc.returncode}) while waiting for {what}:\n{p.log()[-3000:]}")
        logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.procs)
        raise HarnessError(f"timed out after {timeout} s waiting for {what}\n{logs}")

    def collect(self, msg_type, topic: str, qos=None) -> list:
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, qos or reliable())
        return got

    def wait_matched(self, publisher, timeout=15.0, n=1):
        """Waits until `n` subscribers have matched the publisher (DDS discovery)."""
        self.wait_for(lambda: publisher.get_subscription_count() >= n, timeout,
                      f"a subscriber on {publisher.topic_name}")

    def wait_publisher(self, topic: str, timeout=15.0):
        self.wait_for(lambda: self.node.count_publishers(topic) > 0, timeout, f"a publisher on {topic}")

    def close(self):
        codes = {}
        for p in self.procs:
            codes[p.name] = p.stop()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        return codes


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        rate, ch, n = w.getframerate(), w.getnchannels(), w.getnframes()
        x = np.frombuffer(w.readframes(n), dtype=np.int16).astype(np.float32) / 32768.0
    return x.reshape(-1, ch), rate


def write_wav(path: Path, x: np.ndarray, rate: int):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())


def speak(text: str, out: Path, rate: int = 16000, channels: int = 1, voice: str = "en-us", wpm: int = 150) -> Path:
    """Synthesizes `text` with espeak-ng at `rate` Hz, `channels` channels."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", str(channels), "-b", "16", str(out)], check=True)
    raw.unlink()
    return out


def audio_frames(x: np.ndarray, rate: int, encoding: str = "S16LE", frame_ms: float = 20.0, sizes=None):
    """Yields (bytes, n_frames) blocks as a microphone driver would send them."""
    if x.ndim == 1:
        x = x[:, None]
    i, k = 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)] if sizes else int(rate * frame_ms / 1000)
        k += 1
        block = x[i:i + n]
        i += n
        if encoding == "S16LE":
            data = (np.clip(block, -1, 1) * 32767).astype("<i2").tobytes()
        else:
            data = block.astype("<f4").tobytes()
        yield data, len(block)


def publish_audio(h: Harness, pub, x: np.ndarray, rate: int, encoding="S16LE", realtime=True,
                  speed=1.0, sizes=None, frame_ms=20.0):
    """Publishes audio at (a multiple of) real-time pace, spinning meanwhile."""
    from voice_agent.msg import AudioFrame
    channels = 1 if x.ndim == 1 else x.shape[1]
    t0 = time.monotonic()
    sent = 0
    for data, n in audio_frames(x, rate, encoding, frame_ms, sizes):
        m = AudioFrame()
        m.header.stamp = h.node.get_clock().now().to_msg()
        m.header.frame_id = "mic"
        m.sample_rate = rate
        m.channels = channels
        m.encoding = encoding
        m.data = data
        pub.publish(m)
        sent += n
        if realtime:
            due = t0 + sent / rate / speed
            while time.monotonic() < due:
                h.executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        else:
            h.executor.spin_once(timeout_sec=0)


def silence(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    x = np.zeros((int(seconds * rate), channels), dtype=np.float32)
    return x[:, 0] if channels == 1 else x


def wer(ref: str, hyp: str) -> float:
    """Word error rate on lowercase words without punctuation."""
    norm = lambda s: re.findall(r"[a-z0-9']+", s.lower().replace("-", " "))
    r, hw = norm(ref), norm(hyp)
    d = list(range(len(hw) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hw) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != hw[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(hw)] / max(1, len(r))
