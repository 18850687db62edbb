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

import collections
import itertools

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = Path(os.environ.get("VOICE_AGENT_BIN", TARGET / "release"))
MODELS = Path(os.environ.get("VOICE_AGENT_MODELS", Path.home() / ".cache/voice_agent/models"))
WHISPER_MODEL = MODELS / "ggml-tiny.en.bin"
WHISPER_CT2 = MODELS / "whisper-tiny.en-ct2"
VAD_MODEL = MODELS / "ggml-silero-v6.2.3.bin"
LLM_MODEL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
PIPER_VOICE = MODELS / "en_US-joe-medium.onnx"
ONNXRUNTIME = MODELS / "libonnxruntime.so.1.32.0"
SMART_TURN = MODELS / "smart-turn-v3.2-cpu.onnx"
HUMAN_SPEECH = MODELS / "human_speech"
# stt_node's model files, as the launch files pass them
STT_MODELS = {"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "turn.audio_model_path": SMART_TURN,
              "onnxruntime_path": ONNXRUNTIME}


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
                 log_dir: Path | None = None, name: str | None = None, extra_args: list[str] | None = None,
                 env: dict | None = None):
        # params files first: a later -p overrides a file's value
        args = [str(BIN / exe), "--ros-args", *(extra_args or [])]
        for k, v in (params or {}).items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif v == "":
                v = "''"  # rcl refuses "name:=" (as `ros2 run` would)
            args += ["-p", f"{k}:={v}"]
        for k, v in (remaps or {}).items():
            args += ["-r", f"{k}:={v}"]
        env = dict(os.environ, **(env or {}), ROS_DOMAIN_ID=str(domain), RCUTILS_COLORIZED_OUTPUT="0")
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


def diag_value(diags: list, node: str, key: str, default: float = 0.0) -> float:
    """The newest value of `key` in /diagnostics messages (collected in
    `diags`) from the node whose name ends with `node`; `default` before any."""
    for d in reversed(diags):
        for st in d.status:
            if st.name.endswith(node):
                return float({v.key: v.value for v in st.values}.get(key, default))
    return default


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


# ---- human-like test speakers ------------------------------------------------
# Real people pause 0.4-1.0 s inside sentences, speak at different rates,
# and rooms add noise. These helpers build such speech from two synthetic
# voices (espeak-ng's formant voice and a Piper neural voice), clause by
# clause, with chosen pauses and noise.

def _to_16k(path: Path) -> np.ndarray:
    out = path.with_suffix(".16k.wav")
    subprocess.run(["sox", str(path), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    x, _ = read_wav(out)
    return x[:, 0]


def trim(x: np.ndarray, rate: int = 16000, floor_db: float = -45.0) -> np.ndarray:
    """Cuts leading and trailing silence (so inserted pauses are the pauses heard)."""
    win = rate // 100
    n = len(x) // win
    if n == 0:
        return x
    level = 20 * np.log10(np.sqrt(np.mean(x[:n * win].reshape(n, win) ** 2, axis=1)) + 1e-9)
    loud = np.nonzero(level > floor_db)[0]
    if len(loud) == 0:
        return x[:0]
    return x[max(0, loud[0] - 1) * win:min(len(x), (loud[-1] + 2) * win)]


def clause_audio(clauses: list[str], out_dir: Path, voice: str = "espeak", wpm: int = 150,
                 length_scale: float = 1.0) -> list[np.ndarray]:
    """Each clause spoken alone at 16 kHz, silence trimmed. voice: "espeak" or "piper"."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{voice}-{wpm}-{length_scale}-{abs(hash(tuple(clauses))) % 10**8}"
    if voice == "espeak":
        return [trim(read_wav(speak(c, out_dir / f"{tag}-{i}.wav", wpm=wpm))[0][:, 0]) for i, c in enumerate(clauses)]
    base = out_dir / f"{tag}.wav"
    subprocess.run([str(BIN / "tts_node"), "--speak", str(PIPER_VOICE), str(ONNXRUNTIME), str(length_scale), "0",
                    str(base), *clauses], check=True, capture_output=True)
    paths = [base] if len(clauses) == 1 else [base.with_suffix(f".{i}.wav") for i in range(len(clauses))]
    return [trim(_to_16k(p)) for p in paths]


def with_pauses(parts: list[np.ndarray], pauses: list[float], rate: int = 16000) -> np.ndarray:
    """Clauses joined by the given pauses [s] (len(pauses) == len(parts) - 1)."""
    out = [parts[0]]
    for gap, p in zip(pauses, parts[1:]):
        out += [np.zeros(int(gap * rate), np.float32), p]
    return np.concatenate(out).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White-ish room noise at `snr_db` below the speech level (speech windows only)."""
    rng = np.random.default_rng(seed)
    speech = x[np.abs(x) > 1e-3]
    p_signal = float(np.mean(speech ** 2)) if len(speech) else 1e-6
    noise = rng.standard_normal(len(x)).astype(np.float32)
    # a little low-pass: rooms hum more than they hiss
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")
    noise *= np.sqrt(p_signal / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return (x + noise).astype(np.float32)


# ---- the whole loop ----------------------------------------------------------
RATE = 16000
FRAME = RATE // 50  # 20 ms


_domains = itertools.count(os.getpid() % 100)


def pick_domain(from_env: bool = False) -> int:
    """The ROS domain for the next Harness: ROS_DOMAIN_ID when `from_env` and
    it is set (the demo, so `ros2 topic echo` in another shell hears it),
    else the next of 1..100 starting from this process's id, so runs side by
    side and tests one after another never hear each other."""
    if from_env and os.environ.get("ROS_DOMAIN_ID"):
        return int(os.environ["ROS_DOMAIN_ID"])
    return next(_domains) % 100 + 1


def start_nodes(ros, profile="cpu_small", stt=None, llm=None, tts=None, stt_remaps=None, with_tts=True,
                common=None, log_level=None, env=None) -> dict:
    """stt_node, llm_node and (`with_tts`) tts_node on `ros` with a config
    profile and the embedded models, plus per-node overrides and `common`
    parameters for all of them (`env`: extra environment variables). Returns
    the node processes by name."""
    prof = ["--params-file", str(ROOT / "config" / f"{profile}.yaml")]
    if log_level:
        prof += ["--log-level", log_level]
    common = common or {}
    nodes = {
        "stt_node": ros.start("stt_node", params={**STT_MODELS, **common, **(stt or {})}, extra_args=prof,
                              remaps=stt_remaps, env=env),
        "llm_node": ros.start("llm_node", params={"model_path": LLM_MODEL, **common, **(llm or {})}, extra_args=prof,
                              env=env),
    }
    if with_tts:
        nodes["tts_node"] = ros.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME,
                                                          **common, **(tts or {})}, extra_args=prof, env=env)
    return nodes


def start_stt(ros, **params):
    """stt_node alone, judging ends by the voice (Smart Turn) and fed real
    people's recordings through a reliable `audio` publisher (matched before
    it returns), with collectors of its transcripts and /diagnostics.
    Returns (process, audio publisher, transcripts, diagnostics)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from voice_agent.msg import AudioFrame, Utterance
    p = {"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "n_threads": 2, "reliable_audio": True,
         "turn.audio_model_path": SMART_TURN, "onnxruntime_path": ONNXRUNTIME, "turn.judge": "audio",
         "vad.min_silence_ms": 250, "vad.max_silence_ms": 3000}
    p.update(params)
    node = ros.start("stt_node", params=p)
    utts = ros.collect(Utterance, "/transcript")
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    pub = ros.node.create_publisher(AudioFrame, "/audio", reliable())
    ros.wait_matched(pub)
    ros.wait_publisher("/transcript")
    return node, pub, utts, diags


class ActionCaller:
    """An rclpy ActionClient of one of the nodes' actions, as a behaviour
    tree node uses it: goals sent, feedback collected, results awaited."""

    def __init__(self, ros, action, name: str):
        from rclpy.action import ActionClient
        self.ros, self.action = ros, action
        self.client = ActionClient(ros.node, action, name)
        ros.wait_for(lambda: self.client.server_is_ready(), 30, f"the {name} action server")
        self.feedback = []

    def send(self, **goal):
        fut = self.client.send_goal_async(self.action.Goal(**goal),
                                          feedback_callback=lambda f: self.feedback.append(f.feedback))
        self.ros.wait_for(fut.done, 10, "the goal's answer")
        return fut.result()

    def result(self, handle, timeout=60):
        fut = handle.get_result_async()
        self.ros.wait_for(fut.done, timeout, "the goal's result")
        return fut.result()


class LifecycleCaller:
    """A lifecycle manager's view of one managed node: the lifecycle_msgs
    services (`ros2 lifecycle set/get` call the same) and its
    transition_event topic."""

    def __init__(self, ros, node: str):
        from lifecycle_msgs.msg import TransitionEvent
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
        self.ros, self.ChangeState, self.GetState = ros, ChangeState, GetState
        self.GetAvailableTransitions = GetAvailableTransitions
        self.events = ros.collect(TransitionEvent, f"{node}/transition_event", reliable(50))
        self.clients = {n: ros.node.create_client(t, f"{node}/{n}") for n, t in [
            ("change_state", ChangeState), ("get_state", GetState),
            ("get_available_transitions", GetAvailableTransitions),
            ("get_transition_graph", GetAvailableTransitions)]}
        for n, c in self.clients.items():
            ros.wait_for(c.service_is_ready, 30, f"{node}/{n}")

    def _call(self, name, req, timeout=60):
        fut = self.clients[name].call_async(req)
        self.ros.wait_for(fut.done, timeout, f"the {name} answer")
        return fut.result()

    def set(self, label: str, timeout=60) -> bool:
        from lifecycle_msgs.msg import Transition
        req = self.ChangeState.Request(transition=Transition(label=label))
        return self._call("change_state", req, timeout).success

    def state(self) -> str:
        return self._call("get_state", self.GetState.Request()).current_state.label

    def available(self) -> list[str]:
        r = self._call("get_available_transitions", self.GetAvailableTransitions.Request())
        return [t.transition.label for t in r.available_transitions]

    def graph(self) -> int:
        return len(self._call("get_transition_graph", self.GetAvailableTransitions.Request()).available_transitions)


SERVERS_VENV = Path(os.environ.get("VOICE_AGENT_CACHE", Path.home() / ".cache/voice_agent")) / "servers"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real server process on loopback, as a site's GPU server would run
    one. `kill()` is the server or the network going away; `start()` brings
    it back on the same port. Subclasses give its command line."""

    READY_PATH = "/v1/models"
    REQUEST = ""

    def __init__(self, log_dir: Path, api_key: str | None = None, port: int | None = None):
        self.port = port or free_port()
        self.api_key = api_key
        self.log_path = log_dir / f"{type(self).__name__}_{self.port}.log"
        self.proc = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout=120.0):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise HarnessError(f"{type(self).__name__} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if self.answers():
                return self
            time.sleep(0.2)
        raise HarnessError(f"{type(self).__name__} did not answer within {timeout} s:\n{self.log()[-3000:]}")

    def answers(self) -> bool:
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{self.READY_PATH}")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def requests(self) -> int:
        """Requests the server was asked for (its access log)."""
        return self.log().count(self.REQUEST)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self._log.close()


class ChatServer(ServerProcess):
    """llama-cpp-python's OpenAI-compatible server (scripts/setup_servers.sh)
    serving the embedded SmolLM2 GGUF, one request at a time."""

    MODEL = "smollm2"
    REQUEST = "POST /v1/chat/completions"

    def args(self):
        a = [str(SERVERS_VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(LLM_MODEL),
             "--model_alias", self.MODEL, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096",
             "--n_threads", "2", "--interrupt_requests", "False"]
        return a + (["--api_key", self.api_key] if self.api_key else [])


class SpeechServer(ServerProcess):
    """faster-whisper-server's OpenAI-compatible transcription server
    (scripts/setup_servers.sh) with the Whisper tiny.en CTranslate2 files
    fetch_models.py keeps: the same Whisper as stt_node's local one, run by
    another engine. It takes no API key."""

    MODEL = "whisper-tiny.en"
    READY_PATH = "/health"
    REQUEST = "POST /v1/audio/transcriptions"

    def args(self):
        return [str(SERVERS_VENV / "bin" / "python"), "-m", "faster_whisper_server", str(WHISPER_CT2),
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]


class FaultProxy:
    """A TCP proxy in front of a real server that can misbehave as servers
    and networks do. `mode`: "pass" (forwards), "status" (answers 503),
    "slow" (accepts and never answers), "malformed" (a 200 event stream of
    broken JSON). Runs on a thread of the test process."""

    def __init__(self, upstream_port: int):
        import asyncio
        import threading
        self.upstream = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self.seen: list[str] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve():
            self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(serve()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _client(self, reader, writer):
        import asyncio
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            mode = self.mode
            self.seen.append(f"{mode} {head.split(b' ')[1].decode()}")
            if mode == "status":
                msg = b'{"error": "overloaded"}'
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(msg), msg))
            elif mode == "slow":
                await reader.read()  # until the client gives up
            elif mode == "malformed":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                             b'data: {"choices": [{"delta": {"content": "Hel\r\n\r\n')
            else:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
                lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"connection:")]
                up_w.write(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
                await up_w.drain()
                while data := await up_r.read(65536):
                    writer.write(data)
                    await writer.drain()
                up_w.close()
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def rss_mb(proc) -> float:
    """Resident memory of a node's process [MB]."""
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_loop(ros, stt=None, tts=None, llm=None, stt_remaps=None, profile="cpu_small", with_tts=True,
               log_level=None, common=None, env=None):
    """The three nodes (start_nodes), the test's collectors on their topics,
    and a microphone publisher matched to stt_node. Returns (mic publisher,
    collectors)."""
    from rclpy.qos import qos_profile_sensor_data
    from std_msgs.msg import Bool, String
    from voice_agent.msg import AudioFrame, EndOfTurn, Interrupt, PartialTranscript, ReplyChunk, TurnStats, Utterance
    start_nodes(ros, profile, stt=stt, llm=llm, tts=tts, stt_remaps=stt_remaps, with_tts=with_tts,
                log_level=log_level, common=common, env=env)
    t = {
        "partials": ros.collect(PartialTranscript, "/transcript/partial"),
        "eot": ros.collect(EndOfTurn, "/end_of_turn"),
        "heard": ros.collect(Utterance, "/transcript"),
        "chunks": ros.collect(ReplyChunk, "/reply/chunk"),
        "replies": ros.collect(String, "/reply/text"),
        "stats": ros.collect(TurnStats, "/turn_stats"),
        "speaking": ros.collect(Bool, "/speaking", latched()),
        "interrupts": ros.collect(Interrupt, "/interrupt"),
    }
    mic = ros.node.create_publisher(AudioFrame, "/audio", qos_profile_sensor_data)
    ros.wait_matched(mic, timeout=60)
    for topic in ("/transcript", "/reply/chunk") + (("/turn_stats",) if with_tts else ()):
        ros.wait_publisher(topic, timeout=60)
    return mic, t


def human_speech() -> list[tuple[str, np.ndarray, str]]:
    """Real people speaking, from the model cache (fetch_models.py
    human-speech): (name, 16 kHz audio, what was said) for five LibriVox
    sentences read aloud, five card names said as commands and "go forward
    ten meters"."""
    out = []
    for n in ("0870", "0880", "0890", "0920", "0930"):
        x, _ = read_wav(HUMAN_SPEECH / f"librivox-{n}.wav")
        out.append((f"librivox-{n}", x[:, 0], (HUMAN_SPEECH / f"librivox-{n}.txt").read_text().strip()))
    said = {}
    for line in (HUMAN_SPEECH / "cards.transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((\d+)\)", line.strip())
        if m:
            said[m.group(2)] = m.group(1).strip()
    for n in sorted(said):
        x, _ = read_wav(HUMAN_SPEECH / f"cards-{n}.wav")
        out.append((f"cards-{n}", x[:, 0], said[n]))
    x, _ = read_wav(HUMAN_SPEECH / "goforward.wav")
    out.append(("goforward", x[:, 0], "go forward ten meters"))
    return out


def param_value(v):
    """A Python value as an rcl_interfaces ParameterValue of its type."""
    from rcl_interfaces.msg import ParameterType, ParameterValue
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(v))


def set_params(ros, node: str, **values):
    """Sets parameters through the node's real parameter service (what
    `ros2 param set` calls); raises with the reason when one is refused."""
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters

    c = ros.node.create_client(SetParameters, f"/{node}/set_parameters")
    ros.wait_for(c.service_is_ready, 30, f"{node}/set_parameters")
    fut = c.call_async(SetParameters.Request(parameters=[Parameter(name=k, value=param_value(v))
                                                         for k, v in values.items()]))
    ros.wait_for(fut.done, 10, "set_parameters")
    for (k, _), r in zip(values.items(), fut.result().results):
        if not r.successful:
            raise HarnessError(f"{node}: {k} refused: {r.reason}")
    ros.node.destroy_client(c)


class Microphone:
    """Publishes 20 ms frames at real-time pace: queued user speech plus, when
    `echo` is on, the robot's own audio_out as a microphone would hear it."""

    def __init__(self, ros, pub, echo=False):
        self.ros, self.pub = ros, pub
        self.speech = collections.deque()
        self.echo = collections.deque()
        self.t0 = None
        self.sent = 0
        if echo:
            from voice_agent.msg import AudioFrame
            ros.node.create_subscription(AudioFrame, "/audio_out", self._on_out, reliable(500))

    def _on_out(self, f):
        x = np.frombuffer(bytes(f.data), "<i2").astype(np.float32) / 32768
        n = int(len(x) * RATE / f.sample_rate)
        self.echo.extend(np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x) * 0.5)

    def say(self, x):
        self.speech.extend(np.concatenate([x, np.zeros(RATE // 2, np.float32)]))

    def pause(self):
        """Pacing starts afresh at the next run (the time between runs is
        not made up for with a burst of frames)."""
        self.t0, self.sent = None, 0

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        self.run(lambda: time.monotonic() >= end, seconds + 5, "")

    def run(self, until, timeout, what):
        from voice_agent.msg import AudioFrame
        end = time.monotonic() + timeout
        if self.t0 is None:
            self.t0 = time.monotonic()
        while not until():
            if time.monotonic() > end:
                self.ros.wait_for(until, 0.01, what)  # fails with the node logs
            frame = np.zeros(FRAME, np.float32)
            for i in range(FRAME):
                if self.speech:
                    frame[i] += self.speech.popleft()
                if self.echo:
                    frame[i] += self.echo.popleft()
            m = AudioFrame(sample_rate=RATE, channels=1, encoding="S16LE",
                           data=(np.clip(frame, -1, 1) * 32767).astype("<i2").tobytes())
            m.header.stamp = self.ros.node.get_clock().now().to_msg()
            self.pub.publish(m)
            self.sent += FRAME
            due = self.t0 + self.sent / RATE
            while time.monotonic() < due:
                self.ros.executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))


def utterance(tmp_path, text, name):
    x, _ = read_wav(speak(text, tmp_path / f"{name}.wav", rate=RATE))
    return x[:, 0]


def quiet(t):
    return lambda: len(t["speaking"]) > 0 and not t["speaking"][-1].data
