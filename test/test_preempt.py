"""Preemptive replies (llm_node `preempt_above`): at a pause the words judge
finished, the reply's first chunk is generated before the turn is
confirmed and tts_node synthesizes it into a held buffer. Nothing of it
reaches reply/chunk, reply/text or audio_out until the turn comes with the
same words; when the user goes on, or another turn comes, it is discarded.
llm_node and tts_node run as processes; the test stands in for stt_node on
its real topics (transcript/partial with tentative_end, then transcript)."""
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import String
from voice_agent.msg import AudioFrame, PartialTranscript, ReplyChunk, Utterance

from va_harness import LLM_MODEL, ROOT, diag_value, reliable

PROFILE = ["--params-file", str(ROOT / "config" / "cpu_small.yaml")]


def start(ros):
    # preempt_above 1e-4: every judged pause prepares a reply (the words'
    # judge of the tests is SmolLM2-135M, whose scores are low); espeak-ng
    # with realtime off keeps the test short
    ros.start("llm_node", params={"model_path": LLM_MODEL, "preempt_above": 1e-4, "max_tokens": 24},
              extra_args=PROFILE)
    ros.start("tts_node", params={"engine": "espeak", "realtime": False}, extra_args=PROFILE)
    t = {
        "tentative": ros.collect(ReplyChunk, "/reply/tentative"),
        "chunks": ros.collect(ReplyChunk, "/reply/chunk"),
        "replies": ros.collect(String, "/reply/text"),
        "audio": ros.collect(AudioFrame, "/audio_out", reliable(2000)),
        "diags": ros.collect(DiagnosticArray, "/diagnostics"),
    }
    partial = ros.node.create_publisher(PartialTranscript, "/transcript/partial", reliable())
    turn = ros.node.create_publisher(Utterance, "/transcript", reliable())
    ros.wait_matched(partial)
    ros.wait_matched(turn, n=2)  # llm_node, and tts_node (the turn's stt figures)
    ros.wait_publisher("/audio_out")
    return partial, turn, t


def pause(pub, turn_id, revision, text):
    """What stt_node publishes at a tentative end of turn."""
    pub.publish(PartialTranscript(turn_id=turn_id, revision=revision, stable=text, text=text, tentative_end=True))


def diag(t, node, key):
    return diag_value(t["diags"], node, key)


def test_a_held_reply_whose_turn_never_comes_reaches_no_output(ros):
    partial, turn, t = start(ros)
    pause(partial, "held-1", 1, "Tell me a joke about robots.")
    ros.wait_for(lambda: any(c.turn_id == "held-1" for c in t["tentative"]), 60, "a first chunk prepared")
    ros.wait_for(lambda: diag(t, "tts_node", "held_prepared") >= 1, 30, "tts_node holding its audio")
    # the user went on after the pause: what was prepared for it is discarded
    pause(partial, "held-1", 2, "Tell me a joke about robots and dogs.")
    ros.wait_for(lambda: diag(t, "llm_node", "preempt_discarded") >= 1, 30, "llm_node discarding it")
    # and the turn never comes (stt_node dropped it): another does
    turn.publish(Utterance(turn_id="other-1", text="What color is the sky?"))
    ros.wait_for(lambda: any(c.turn_id == "other-1" and c.is_final for c in t["chunks"]), 60, "the other turn answered")
    ros.wait_for(lambda: any(f.turn_id == "other-1" for f in t["audio"]), 30, "the other turn spoken")
    ros.wait_for(lambda: diag(t, "tts_node", "held_discarded") >= 1, 30, "tts_node discarding what it held")
    ros.spin_for(1.0)
    prepared = {c.text.strip() for c in t["tentative"] if c.turn_id == "held-1"}
    assert prepared and all(prepared), prepared
    assert not [c for c in t["chunks"] if c.turn_id == "held-1"], "a held reply reached reply/chunk"
    assert not [f for f in t["audio"] if f.turn_id == "held-1"], "a held reply reached audio_out"
    other = " ".join("".join(c.text for c in t["chunks"] if c.turn_id == "other-1").split())
    assert [" ".join(r.data.split()) for r in t["replies"]] == [other], "reply/text carried more than the turn answered"
    assert diag(t, "tts_node", "held_released") == 0
    assert diag(t, "llm_node", "preempt_confirmed") == 0
    assert diag(t, "llm_node", "preempt_wasted_tokens") >= 1


def test_a_held_reply_is_spoken_at_once_when_its_turn_is_confirmed(ros):
    partial, turn, t = start(ros)
    text = "Tell me a joke about robots."
    pause(partial, "held-2", 1, text)
    ros.wait_for(lambda: any(c.turn_id == "held-2" for c in t["tentative"]), 60, "a first chunk prepared")
    ros.wait_for(lambda: diag(t, "tts_node", "held_prepared") >= 1, 30, "tts_node holding its audio")
    assert not [c for c in t["chunks"] if c.turn_id == "held-2"]
    assert not [f for f in t["audio"] if f.turn_id == "held-2"]
    turn.publish(Utterance(turn_id="held-2", text=text))
    ros.wait_for(lambda: any(c.turn_id == "held-2" and c.is_final for c in t["chunks"]), 60, "the reply")
    ros.wait_for(lambda: any(f.turn_id == "held-2" for f in t["audio"]), 30, "the reply spoken")
    ros.wait_for(lambda: diag(t, "tts_node", "held_released") >= 1, 30, "tts_node releasing what it held")
    first = next(c for c in t["chunks"] if c.turn_id == "held-2")
    held = next(c for c in t["tentative"] if c.turn_id == "held-2")
    # the turn took the prepared chunk over: the same words, published first
    assert first.index == 0 and first.text.strip() == held.text.strip(), (first.text, held.text)
    assert diag(t, "llm_node", "preempt_confirmed") == 1
    assert diag(t, "llm_node", "preempt_discarded") == 0
    assert diag(t, "tts_node", "held_discarded") == 0
    reply = "".join(c.text for c in t["chunks"] if c.turn_id == "held-2").strip()
    assert reply.startswith(held.text.strip()) and len(t["replies"]) == 1
