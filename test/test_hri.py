"""ROS4HRI speech: stt_node publishes hri_msgs/LiveSpeech on the voice topic
(here built against the test-only copy of the released definition,
test/interfaces/hri_msgs): the hypothesis while a real person speaks, then the
turn's transcript as `final`, with the same text, confidence and language as
the Utterance on `transcript`."""
from diagnostic_msgs.msg import DiagnosticArray
from voice_agent.msg import AudioFrame, Utterance

from va_harness import (ONNXRUNTIME, SMART_TURN, VAD_MODEL, WHISPER_MODEL, human_speech, publish_audio, reliable,
                        silence)

VOICE_TOPIC = "/humans/voices/anonymous_speaker/speech"


def test_live_speech_incremental_then_final(ros):
    from hri_msgs.msg import LiveSpeech
    node = ros.start("stt_node", params={
        "model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "n_threads": 2, "reliable_audio": True,
        "turn.audio_model_path": SMART_TURN, "onnxruntime_path": ONNXRUNTIME, "turn.judge": "audio",
        "vad.min_silence_ms": 250, "vad.max_silence_ms": 2000, "turn.partial_interval_ms": 500,
        "live_speech_topic": VOICE_TOPIC})
    speech = ros.collect(LiveSpeech, VOICE_TOPIC)
    utts = ros.collect(Utterance, "/transcript")
    ros.collect(DiagnosticArray, "/diagnostics")
    pub = ros.node.create_publisher(AudioFrame, "/audio", reliable())
    ros.wait_matched(pub)
    ros.wait_publisher(VOICE_TOPIC)
    # a person reading a long sentence: hypotheses come while it is read
    name, x, said = next(r for r in human_speech() if r[0] == "librivox-0870")
    publish_audio(ros, pub, x, 16000)
    for _ in range(40):
        publish_audio(ros, pub, silence(0.1), 16000)
    ros.wait_for(lambda: utts, 60, "the turn")
    ros.wait_for(lambda: any(m.final for m in speech), 10, "the final LiveSpeech")
    u = utts[0]
    finals = [m for m in speech if m.final]
    incremental = [m for m in speech if m.incremental]
    assert len(finals) == 1, [m.final for m in finals]
    f = finals[0]
    assert (f.final, f.language, f.incremental) == (u.text, u.language, ""), (f, u.text)
    assert abs(f.confidence - u.confidence) < 1e-6 and 0 < f.confidence <= 1
    assert incremental, "no hypothesis while the person spoke"
    assert all(not m.final and m.confidence == 0.0 for m in incremental)
    # the hypotheses come before the final, and the last one says most of it
    assert speech.index(f) == len(speech) - 1
    assert len(incremental[-1].incremental.split()) >= len(u.text.split()) // 2, (incremental[-1], u.text)
    assert node.alive()

