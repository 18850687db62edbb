"""llm_node and stt_node with `engine: openai` against real
OpenAI-compatible servers (scripts/setup_servers.sh), as a site's GPU server
would run them: llama-cpp-python's chat server serving the embedded SmolLM2
GGUF with an API key, and faster-whisper-server transcribing with the same
Whisper tiny.en as CTranslate2 files. The servers are killed and started
again to be the server (or the network) going away and coming back; faults a
process cannot show (503, no answer, broken JSON) come from a proxy in front
of the real server. Nothing is mocked.
"""
import json
import time

import pytest

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import GetParameters, ListParameters
from std_msgs.msg import String
from voice_agent.msg import Interrupt, ReplyChunk, Utterance

from test_turn_judge import say
from va_harness import LLM_MODEL, ChatServer, Microphone, SpeechServer, diag_value, human_speech, reliable
from va_harness import start_loop, start_stt, utterance, wer

KEY = "sk-site-4f9c2e71d8a3"
KEY_ENV = {"VA_TEST_SERVER_KEY": KEY}
STORY = "Tell me a long story about a robot who learns to paint."


@pytest.fixture
def servers(tmp_path):
    """Makes the test's servers; whatever of them still runs is killed at
    its end (a server left running would outlive the test)."""
    made = []

    def make(cls, **kw):
        made.append(cls(tmp_path, **kw))
        return made[-1]

    yield make
    for s in made:
        s.kill()


def llm_params(server, **params):
    p = {"engine": "openai", "server.base_url": server.base_url, "server.model": ChatServer.MODEL,
         "server.api_key_env": "VA_TEST_SERVER_KEY", "server.timeout_s": 10.0, "server.probe_interval_s": 0.5,
         "model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 4096, "parallel": 2, "temperature": 0.0,
         "use_mlock": False, "max_tokens": 96}
    p.update(params)
    return p


def start_llm(ros, server, env=None, **params):
    node = ros.start("llm_node", params=llm_params(server, **params), env=KEY_ENV if env is None else env)
    t = {
        "chunks": ros.collect(ReplyChunk, "/reply/chunk"),
        "texts": ros.collect(String, "/reply/text"),
        "diags": ros.collect(DiagnosticArray, "/diagnostics"),
    }
    pub = ros.node.create_publisher(Utterance, "/transcript", reliable())
    ros.wait_matched(pub, timeout=60)
    ros.wait_publisher("/reply/text", timeout=60)
    return node, pub, t


def ask(pub, text, turn_id):
    pub.publish(Utterance(turn_id=turn_id, text=text))


def of_turn(chunks, turn_id):
    return sorted((c for c in chunks if c.turn_id == turn_id), key=lambda c: c.index)


def closed(t, turn_id):
    return any(c.is_final for c in of_turn(t["chunks"], turn_id))


def diag(t, key):
    return diag_value(t["diags"], "llm_node", key, default=-1)


def test_a_spoken_request_is_answered_through_the_server(ros, tmp_path, servers):
    server = servers(ChatServer, api_key=KEY).start()
    mic, t = start_loop(ros, llm=llm_params(server), with_tts=False, env=KEY_ENV)
    microphone = Microphone(ros, mic)
    question = "What color is the sky on a clear day?"
    microphone.say(utterance(tmp_path, question, "question"))
    microphone.run(lambda: t["replies"], 90, "the reply")
    heard = t["heard"][0]
    assert wer(question, heard.text) <= 0.2, heard.text
    # answered by the server (what the 135M model says to the words heard
    # is its business: the transcript may differ by a word between runs)
    assert server.requests() == 1
    log = next(p for p in ros.procs if p.name == "llm_node").log()
    assert any(line.split("]: ")[-1].startswith(f"turn {heard.turn_id} (") and "from the server" in line
               for line in log.splitlines()), log[-2000:]
    assert "answered by the local model" not in log
    chunks = of_turn(t["chunks"], heard.turn_id)
    reply = t["replies"][0].data
    assert reply.strip() and chunks[-1].is_final and "".join(c.text for c in chunks) == reply


def test_an_interrupt_cancels_the_servers_stream(ros, tmp_path, servers):
    server = servers(ChatServer, api_key=KEY).start()
    node, pub, t = start_llm(ros, server, max_tokens=1000)
    stop = ros.node.create_publisher(Interrupt, "/interrupt", reliable())
    ros.wait_matched(stop)
    ask(pub, STORY, "story")
    ros.wait_for(lambda: of_turn(t["chunks"], "story"), 60, "the story's first chunk")
    stop.publish(Interrupt(reason="user said stop"))
    ros.wait_for(lambda: closed(t, "story"), 10, "the story's final chunk")
    story = of_turn(t["chunks"], "story")
    assert story[-1].generated_tokens < 500, story[-1].generated_tokens
    # the server saw the connection close and stopped generating
    ros.wait_for(lambda: "Disconnected from client" in server.log(), 20, "the server's disconnect line")
    # and it is free for the next request at once
    ask(pub, "What is the opposite of hot?", "next")
    ros.wait_for(lambda: closed(t, "next"), 60, "the next reply")
    assert "cold" in "".join(c.text for c in of_turn(t["chunks"], "next")).lower()
    assert server.requests() == 2


def test_server_lost_mid_reply_then_fallback_then_back(ros, tmp_path, servers):
    server = servers(ChatServer, api_key=KEY).start()
    node, pub, t = start_llm(ros, server, max_tokens=1000)
    ask(pub, STORY, "story")
    ros.wait_for(lambda: of_turn(t["chunks"], "story"), 60, "the story's first chunk")
    server.kill()
    # the half reply gets its final chunk; nothing hangs
    ros.wait_for(lambda: closed(t, "story"), 30, "the cut story's final chunk")
    # the next turn is answered by the local model
    ask(pub, "What is the opposite of hot?", "fallback")
    ros.wait_for(lambda: closed(t, "fallback"), 60, "the fallback's reply")
    reply = "".join(c.text for c in of_turn(t["chunks"], "fallback"))
    assert "cold" in reply.lower(), reply
    log = node.log()
    assert "answered by the local model" in log
    assert sum("failed: " in line and "server" in line for line in log.splitlines()) == 1, log[-3000:]
    ros.wait_for(lambda: diag(t, "fallback_turns") == 1, 10, "fallback counted")
    assert diag(t, "server_cut_replies") == 1
    # the server comes back: the node finds it and uses it again
    server.start()
    ros.wait_for(lambda: "answers again" in node.log(), 30, "the node finding the server again")
    before = server.requests()
    ask(pub, "What color is the sky on a clear day?", "back")
    ros.wait_for(lambda: closed(t, "back"), 60, "the reply through the server")
    assert server.requests() == before + 1
    assert "".join(c.text for c in of_turn(t["chunks"], "back")).strip()


def all_parameters(ros, node):
    lc = ros.node.create_client(ListParameters, f"/{node}/list_parameters")
    gc = ros.node.create_client(GetParameters, f"/{node}/get_parameters")
    ros.wait_for(lambda: lc.service_is_ready() and gc.service_is_ready(), 30, "parameter services")
    fut = lc.call_async(ListParameters.Request())
    ros.wait_for(fut.done, 10, "list_parameters")
    names = list(fut.result().result.names)
    fut = gc.call_async(GetParameters.Request(names=names))
    ros.wait_for(fut.done, 10, "get_parameters")
    return {n: str(v) for n, v in zip(names, fut.result().values)}


def test_a_wrong_api_key_is_one_clear_error_and_the_local_model_answers(ros, tmp_path, servers):
    server = servers(ChatServer, api_key=KEY).start()
    wrong = "sk-wrong-0b7d55e1"
    node, pub, t = start_llm(ros, server, env={"VA_TEST_SERVER_KEY": wrong})
    for i, q in enumerate(["What is the opposite of hot?", "What color is the sky on a clear day?"]):
        ask(pub, q, f"q{i}")
        ros.wait_for(lambda: closed(t, f"q{i}"), 60, f"reply {i}")
    assert "cold" in "".join(c.text for c in of_turn(t["chunks"], "q0")).lower()
    log = node.log()
    errors = [line for line in log.splitlines() if "HTTP 401" in line and "ERROR" in line]
    assert len(errors) == 1, log[-3000:]
    assert "api_key_env" in errors[0]
    ros.wait_for(lambda: diag(t, "fallback_turns") == 2, 10, "both turns by the fallback")
    # the key is in none of what the node shows
    params = all_parameters(ros, "llm_node")
    assert params["server.api_key_env"].find("VA_TEST_SERVER_KEY") >= 0
    everything = log + json.dumps(params) + str(t["diags"])
    assert wrong not in everything and KEY not in everything
    assert server.requests() == 0  # refused before any chat request


def test_a_missing_key_variable_names_the_parameter(ros, tmp_path, servers):
    server = servers(ChatServer, api_key=KEY)  # never started: not needed to fail
    node = ros.start("llm_node", params=llm_params(server), env={})
    ros.wait_for(lambda: not node.alive(), 30, "llm_node to exit", [])
    assert node.proc.returncode != 0
    assert "server.api_key_env" in node.log() and "VA_TEST_SERVER_KEY" in node.log()


def test_without_a_fallback_a_down_server_ends_the_turn_with_its_error(ros, tmp_path, servers):
    server = servers(ChatServer)  # nothing listens on its port
    node, pub, t = start_llm(ros, server, env={}, fallback="none", model_path="",
                             **{"server.api_key_env": ""})
    ask(pub, "Hello?", "lost")
    ros.wait_for(lambda: closed(t, "lost"), 30, "the closing chunk")
    assert "".join(c.text for c in of_turn(t["chunks"], "lost")) == ""
    assert "not answered" in node.log() and "cannot connect" in node.log()
    # the server comes up later: the next turn goes to it
    server.start()
    ask(pub, "What is the opposite of hot?", "later")
    ros.wait_for(lambda: closed(t, "later"), 60, "the reply once the server is up")
    assert "cold" in "".join(c.text for c in of_turn(t["chunks"], "later")).lower()
    assert server.requests() == 1


def test_intents_through_structured_output_send_the_same_goal_as_the_local_engine(ros, tmp_path, servers):
    """The action's JSON schema goes to the server as its response_format;
    llama-cpp-python takes it inside a json_object format. The goal that
    reaches Nav2 is the one the local engine's grammar gives."""
    from test_intents import PLACES, Nav2
    from voice_agent.msg import Intent
    server = servers(ChatServer, api_key=KEY).start()
    nav = Nav2(ros)
    node, pub, t = start_llm(ros, server, places_file=PLACES, max_tokens=64,
                             **{"server.response_format": "json_object"})
    intents = ros.collect(Intent, "/intent")
    ask(pub, "Go to the kitchen.", "kitchen")
    ros.wait_for(lambda: nav.events("goal"), 60, "goal at the Nav2 stand-in", [node, nav.proc])
    g = nav.events("goal")[0]
    assert (g["via"], g["frame_id"], g["x"], g["y"]) == ("action", "map", 4.2, -1.5)
    ros.wait_for(lambda: intents and t["texts"], 10, "intent and reply")
    assert (intents[0].action, intents[0].place, intents[0].goal_sent) == (Intent.NAVIGATE_TO, "kitchen", True)
    assert t["texts"][0].data == "Going to the kitchen."
    assert server.requests() == 1
    # an answer's words stream out of the JSON, none of the JSON is said
    ask(pub, "What color is the sky on a clear day?", "sky")
    ros.wait_for(lambda: closed(t, "sky"), 60, "the answer")
    said = "".join(c.text for c in of_turn(t["chunks"], "sky"))
    assert said.strip() and "{" not in said and "action" not in said, said


def test_server_faults_are_one_error_each_and_the_fallback_answers_within_the_timeout(ros, tmp_path, servers):
    """503, a server that never answers (server.timeout_s 1 s) and a
    malformed stream, each through a fault-injecting proxy in front of the
    real server: one error line naming the fault, the turn answered by the
    local model, then the server used again once it answers."""
    from va_harness import FaultProxy
    server = servers(ChatServer, api_key=KEY).start()
    proxy = FaultProxy(server.port)
    try:
        node, pub, t = start_llm(ros, server, **{"server.base_url": proxy.base_url, "server.timeout_s": 1.0})
        faults = {"status": "HTTP 503", "slow": "no answer within 1.0 s", "malformed": "malformed answer"}
        for n, (mode, says) in enumerate(faults.items()):
            proxy.mode = mode
            asked = time.monotonic()
            ask(pub, "What is the opposite of hot?", mode)
            ros.wait_for(lambda: closed(t, mode), 30, f"the reply despite {mode}")
            # the fault's wait (at most the timeout) plus the local model's reply
            assert time.monotonic() - asked < 1.0 + 10, mode
            assert "cold" in "".join(c.text for c in of_turn(t["chunks"], mode)).lower()
            errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
            assert len(errors) == n + 1 and says in errors[-1], errors
            proxy.mode = "pass"
            ros.wait_for(lambda: node.log().count("answers again") == n + 1, 30, "the server found again")
            before = server.requests()
            ask(pub, "What color is the sky on a clear day?", f"back{n}")
            ros.wait_for(lambda: closed(t, f"back{n}"), 60, "the reply through the server")
            assert server.requests() == before + 1
        ros.wait_for(lambda: diag(t, "server_errors") == 3, 10, "the faults counted")
        assert diag(t, "fallback_turns") == 3
    finally:
        proxy.close()


def test_an_on_demand_fallback_loads_at_the_first_fault(ros, tmp_path, servers):
    server = servers(ChatServer)  # nothing listens on its port yet
    node, pub, t = start_llm(ros, server, env={}, fallback_load="on_demand", **{"server.api_key_env": ""})
    assert "loaded at the first fault" in node.log() and "local model loaded" not in node.log()
    ask(pub, "What is the opposite of hot?", "first")
    ros.wait_for(lambda: closed(t, "first"), 60, "the reply once the local model is loaded")
    assert "cold" in "".join(c.text for c in of_turn(t["chunks"], "first")).lower()
    log = node.log()
    assert log.index("loading the local model") < log.index("local model loaded")


def test_managed_with_a_server_cleanup_frees_the_fallback_and_configure_comes_back(ros, tmp_path, servers):
    from va_harness import LifecycleCaller, rss_mb
    server = servers(ChatServer, api_key=KEY).start()
    node, pub, t = start_llm(ros, server, managed=True)
    lc = LifecycleCaller(ros, "/llm_node")
    bare = rss_mb(node)
    for round in range(2):
        assert lc.set("configure") and lc.set("activate")
        ask(pub, "What is the opposite of hot?", f"r{round}")
        ros.wait_for(lambda: closed(t, f"r{round}"), 60, "the reply through the server")
        assert server.requests() == round + 1
        loaded = rss_mb(node)
        assert lc.set("deactivate") and lc.set("cleanup")
        assert lc.state() == "unconfigured"
        # the fallback model was loaded at configure and is freed at cleanup
        assert rss_mb(node) < loaded - 40, (bare, loaded, rss_mb(node))


def hear(ros, pub, utts, x):
    return say(ros, pub, utts, x)[-1]


def test_real_speech_is_transcribed_by_the_server_then_by_local_whisper_while_it_is_gone(ros, tmp_path, servers):
    server = servers(SpeechServer).start()
    # partials every 10 s at most: the server (slower than local Whisper on
    # these 2 cores) keeps up with that cadence, so it makes them too
    node, pub, utts, diags = start_stt(ros, engine="openai", **{
        "server.base_url": server.base_url, "server.model": SpeechServer.MODEL, "server.timeout_s": 10.0,
        "server.probe_interval_s": 0.5, "turn.partial_interval_ms": 10000})
    people = {name: (x, said) for name, x, said in human_speech()}
    x, said = people["librivox-0870"]
    u = hear(ros, pub, utts, x)
    assert wer(said, u.text) <= 0.3, (said, u.text)
    assert server.requests() >= 1 and 0 < u.confidence <= 1, u
    ros.wait_for(lambda: diag_value(diags, "stt_node", "server_transcriptions") > 0, 10, "counted")
    # the server goes away: one error line, local Whisper hears the next turn
    server.kill()
    x, said = people["goforward"]
    u = hear(ros, pub, utts, x)
    assert wer(said, u.text) <= 0.3, (said, u.text)
    errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "transcription server" in errors[0], errors
    ros.wait_for(lambda: diag_value(diags, "stt_node", "fallback_transcriptions") > 0, 10, "counted")
    # back: found again while the node is idle, the next turn goes to it
    server.start()
    ros.wait_for(lambda: "answers again" in node.log(), 30, "the server found again")
    before = server.requests()
    x, said = people["librivox-0920"]
    u = hear(ros, pub, utts, x)
    assert wer(said, u.text) <= 0.3, (said, u.text)
    assert server.requests() > before


def test_without_local_whisper_the_server_hears_everything(ros, tmp_path, servers):
    """fallback none: no Whisper in the process (model_path ""); partials
    come from the server while it keeps up with their cadence."""
    from va_harness import rss_mb
    from voice_agent.msg import PartialTranscript
    server = servers(SpeechServer).start()
    partials = ros.collect(PartialTranscript, "/transcript/partial")
    node, pub, utts, diags = start_stt(ros, engine="openai", fallback="none", model_path="", **{
        "server.base_url": server.base_url, "server.model": SpeechServer.MODEL, "server.timeout_s": 10.0,
        "turn.partial_interval_ms": 1000})
    assert "Whisper on the server" in node.log()
    x, said = next((x, said) for name, x, said in human_speech() if name == "librivox-0880")
    u = hear(ros, pub, utts, x)
    assert wer(said, u.text) <= 0.3, (said, u.text)
    assert any(p.turn_id == u.turn_id and p.text for p in partials), "no partial from the server"
    assert rss_mb(node) < 200, rss_mb(node)
