"""Runtime parameter sets through the real parameter services (what `ros2
param set` / `describe` call): a live parameter changes the next turn, an
invalid value, a read-only parameter or a wrong type is refused with the
reason and the old value stays."""
import numpy as np
from rcl_interfaces.msg import Parameter
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters, SetParametersAtomically
from std_msgs.msg import String
from voice_agent.msg import AudioFrame, ReplyChunk, Utterance

from va_harness import LLM_MODEL, param_value, reliable


value = param_value


class Params:
    """rclpy clients of one node's parameter services."""

    def __init__(self, ros, node):
        self.ros = ros
        self.clients = {srv: ros.node.create_client(t, f"/{node}/{srv}") for srv, t in [
            ("set_parameters", SetParameters), ("get_parameters", GetParameters),
            ("describe_parameters", DescribeParameters), ("set_parameters_atomically", SetParametersAtomically)]}
        for name, c in self.clients.items():
            ros.wait_for(c.service_is_ready, 60, f"{node}/{name}")

    def call(self, srv, req):
        fut = self.clients[srv].call_async(req)
        self.ros.wait_for(fut.done, 10, srv)
        return fut.result()

    def set(self, name, v):
        r = self.call("set_parameters", SetParameters.Request(parameters=[Parameter(name=name, value=value(v))]))
        return r.results[0]

    def get(self, name):
        v = self.call("get_parameters", GetParameters.Request(names=[name])).values[0]
        return {1: v.bool_value, 2: v.integer_value, 3: v.double_value, 4: v.string_value}.get(v.type)

    def describe(self, name):
        return self.call("describe_parameters", DescribeParameters.Request(names=[name])).descriptors[0]


def test_llm_live_readonly_invalid_and_wrong_type(ros):
    node = ros.start("llm_node", params={"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 2048, "parallel": 2,
                                         "temperature": 0.0, "use_mlock": False, "max_tokens": 48})
    chunks = ros.collect(ReplyChunk, "/reply/chunk")
    texts = ros.collect(String, "/reply/text")
    pub = ros.node.create_publisher(Utterance, "/transcript", reliable())
    ros.wait_matched(pub)
    ros.wait_publisher("/reply/text")
    p = Params(ros, "llm_node")

    def turn(tid, text="Tell me a short story about a robot.", conv=None):
        pub.publish(Utterance(turn_id=tid, conversation_id=conv or tid, text=text))
        ros.wait_for(lambda: any(c.turn_id == tid and c.is_final for c in chunks), 60, f"reply {tid}")
        return [c for c in chunks if c.turn_id == tid][-1]

    assert turn("before").generated_tokens > 5

    # live: the next turn uses the new value
    r = p.set("max_tokens", 5)
    assert r.successful, r.reason
    assert p.get("max_tokens") == 5
    assert turn("after").generated_tokens <= 5

    # read-only: refused with the reason, value kept
    r = p.set("n_threads", -5)
    assert not r.successful and "read-only" in r.reason, r.reason
    assert p.get("n_threads") == 2
    assert p.describe("n_threads").read_only
    assert not p.describe("max_tokens").read_only

    # invalid: the same check as at start-up
    for name, bad, why in [("temperature", -1.0, "temperature"), ("top_p", 0.0, "top_p"),
                           ("busy_policy", "sometimes", "busy_policy"), ("max_tokens", 100000, "max_tokens")]:
        r = p.set(name, bad)
        assert not r.successful and why in r.reason, (name, r.reason)
    assert p.get("temperature") == 0.0 and p.get("max_tokens") == 5

    # wrong type and unknown names
    r = p.set("max_tokens", "many")
    assert not r.successful and "integer" in r.reason, r.reason
    r = p.set("no_such_parameter", 1)
    assert not r.successful and "not declared" in r.reason, r.reason

    # atomically: one bad value refuses the whole set
    r = p.call("set_parameters_atomically", SetParametersAtomically.Request(parameters=[
        Parameter(name="max_tokens", value=value(7)), Parameter(name="top_k", value=value(-3))])).result
    assert not r.successful and "top_k" in r.reason
    assert p.get("max_tokens") == 5

    # the system prompt is live too: a fresh conversation's prompt grows by it
    short = turn("short_sys", "Hello!").prompt_tokens
    r = p.set("system_prompt", "You are a helpful robot assistant on a ship. " * 4)
    assert r.successful, r.reason
    longer = turn("long_sys", "Hello!").prompt_tokens
    assert longer > short + 20, (short, longer)
    assert node.alive()
    assert "parameter set refused" in node.log()


def test_tts_volume_is_live(ros):
    node = ros.start("tts_node", params={"engine": "espeak", "realtime": False})
    out = ros.collect(AudioFrame, "/audio_out", reliable(500))
    say = ros.node.create_publisher(String, "/say", reliable())
    ros.wait_matched(say)
    p = Params(ros, "tts_node")

    def speak(text):
        n = len(out)
        say.publish(String(data=text))
        ros.wait_for(lambda: len(out) > n + 5, 20, "audio out")
        ros.spin_for(0.5)
        x = np.concatenate([np.frombuffer(bytes(f.data), "<i2") for f in out[n:]]).astype(np.float32)
        return np.abs(x).max()

    loud = speak("Hello there, this is a test.")
    assert p.set("volume", 0.25).successful
    quiet = speak("Hello there, this is a test.")
    assert 0 < quiet < loud * 0.35, (quiet, loud)
    r = p.set("volume", 9.0)
    assert not r.successful and "volume" in r.reason
    r = p.set("engine", "piper")
    assert not r.successful and "read-only" in r.reason
    assert p.get("volume") == 0.25
    assert node.alive()


def test_stt_refuses_bad_vad_values_and_names_them(ros):
    from va_harness import VAD_MODEL, WHISPER_MODEL
    node = ros.start("stt_node", params={"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "n_threads": 2})
    p = Params(ros, "stt_node")
    r = p.set("vad.min_silence_ms", 5)
    assert not r.successful and "vad.min_silence_ms" in r.reason, r.reason
    r = p.set("vad.threshold", 1.5)
    assert not r.successful and "vad.threshold" in r.reason, r.reason
    assert p.set("vad.min_silence_ms", 700).successful
    assert p.get("vad.min_silence_ms") == 700
    r = p.set("model_path", "/other.bin")
    assert not r.successful and "read-only" in r.reason
    assert p.describe("vad.model_path").read_only and not p.describe("vad.threshold").read_only
    assert node.alive()
