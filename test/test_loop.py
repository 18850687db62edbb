"""The whole voice loop with the cpu_small profile and the embedded models:
microphone audio in, transcript, streamed reply, speech out, turn stats;
the robot's own voice heard back (echo) and barge-in."""
from va_harness import Microphone, diag_value, quiet, start_loop, utterance, wer


def test_spoken_request_is_answered_with_turn_stats(ros, tmp_path):
    mic_pub, t = start_loop(ros)
    mic = Microphone(ros, mic_pub)
    question = "What color is the sky on a clear day?"
    mic.say(utterance(tmp_path, question, "q"))
    mic.run(lambda: len(t["stats"]) >= 1 and quiet(t)(), 60, "a complete turn")
    u, s = t["heard"][0], t["stats"][0]
    assert wer(question, u.text) <= 0.25, u.text
    assert s.turn_id == u.turn_id
    reply = "".join(c.text for c in sorted((c for c in t["chunks"] if c.turn_id == u.turn_id), key=lambda c: c.index))
    assert reply.strip() and "blue" in reply.lower(), reply
    # the breakdown adds up: each stage is inside the end-to-end figure
    assert 0 < s.stt_compute_ms < s.stt_ms
    assert 0 < s.llm_first_token_ms <= s.llm_first_chunk_ms
    assert s.tts_first_audio_ms > 0 and s.tokens_per_s > 0 and s.prompt_tokens > 0
    assert s.end_of_speech_to_first_audio_ms > s.stt_ms + s.llm_first_chunk_ms
    assert s.end_of_speech_to_first_audio_ms < 20000


def run_echo(ros, tmp_path, gate):
    """A request whose spoken reply reaches the microphone (playback off: the
    test mixes audio_out into the microphone signal). stt_node hears speech
    while the robot speaks and tells its echo by the robot's own words; the
    control unplugs what it knows of the robot (`speaking` and its words)."""
    remaps = None if gate else {"speaking": "/unplugged/speaking", "reply/chunk": "/unplugged/chunk",
                                "say": "/unplugged/say"}
    mic_pub, t = start_loop(ros, stt_remaps=remaps)
    mic = Microphone(ros, mic_pub, echo=True)
    mic.say(utterance(tmp_path, "Please tell me a short story about a robot.", "q"))
    mic.run(lambda: len(t["heard"]) >= 1, 60, "the user's transcript")
    return mic, t


def test_echo_of_the_robot_is_not_a_turn(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    mic, t = run_echo(ros, tmp_path, gate=True)
    mic.run(lambda: len(t["stats"]) >= 1 and quiet(t)(), 60, "the reply spoken")
    # the echo is heard and recognized as the robot's own words, not ignored
    # (the microphone keeps listening after the robot stopped; Whisper on
    # the echo of a long reply takes a while on a busy machine)
    mic.run(lambda: diag_value(diags, "stt_node", "echo_rejected") >= 1, 60, "the echo counted as rejected")
    assert len(t["heard"]) == 1, [u.text for u in t["heard"]]


def test_echo_control_without_the_gate_is_heard(ros, tmp_path):
    """Control for the test above: with `speaking` unplugged the same echo
    becomes a transcript, so the echo test can fail."""
    mic, t = run_echo(ros, tmp_path, gate=False)
    mic.run(lambda: len(t["heard"]) >= 2, 60, "the robot's own voice transcribed")


def test_barge_in_interrupts_and_the_new_question_is_answered(ros, tmp_path):
    mic_pub, t = start_loop(ros, stt={"barge_in": True}, llm={"max_tokens": 120})
    mic = Microphone(ros, mic_pub)
    mic.say(utterance(tmp_path, "Please tell me a short story about a robot.", "story"))
    mic.run(lambda: any(m.data for m in t["speaking"]), 60, "the robot speaking")
    first = t["heard"][0].turn_id
    second_q = "What color is the sky on a clear day?"
    mic.say(utterance(tmp_path, second_q, "sky"))
    mic.run(lambda: len(t["interrupts"]) >= 1, 20, "interrupt")
    mic.run(lambda: len(t["heard"]) >= 2, 30, "the second transcript")
    second = t["heard"][1].turn_id
    assert wer(second_q, t["heard"][1].text) <= 0.25
    mic.run(lambda: any(s.turn_id == second for s in t["stats"]) and quiet(t)(), 60, "the second answer spoken")
    story = [c for c in t["chunks"] if c.turn_id == first]
    final = [c for c in story if c.is_final]
    assert final and final[0].generated_tokens < 120, "the story was not cut short"
    # answered (its content is the small model's business: the interrupted
    # story is in the conversation's history now)
    answer = "".join(c.text for c in t["chunks"] if c.turn_id == second)
    assert answer.strip(), "empty answer to the new question"
