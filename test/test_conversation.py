"""Talking with a person: sentences with pauses inside them (two voices,
several rates, room noise), partial transcripts while the user speaks, the
end of the turn judged from the words, speech over the robot, and long
continuous speech. Real nodes over topics, embedded models."""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import String
from voice_agent.msg import AudioFrame, EndOfTurn, Intent, PartialTranscript, ReplyChunk, Utterance

from va_harness import (LLM_MODEL, ROOT, Microphone, add_noise, clause_audio, diag_value, quiet, reliable, start_loop,
                      utterance, wer, with_pauses)

# one sentence each, cut where people pause: at commas, between clauses
SENTENCES = [
    ["When you get to the lab,", "tell me how warm it is."],
    ["Please go to the kitchen,", "and bring me a glass of water."],
    ["I was wondering,", "do you know where the charging dock is?"],
]
PAUSES = [0.7, 0.9, 0.6]  # inside each sentence [s]
BETWEEN = 2.5  # between sentences [s]

SPEAKERS = {
    "espeak-140wpm": dict(voice="espeak", wpm=140),
    "piper-slow-noisy": dict(voice="piper", length_scale=1.2, snr_db=25),
    "espeak-175wpm-noisy": dict(voice="espeak", wpm=175, snr_db=20),
}


def speech_of(tmp_path, clauses, pauses, speaker, seed=0):
    opts = dict(SPEAKERS[speaker])
    snr = opts.pop("snr_db", None)
    x = with_pauses(clause_audio(clauses, tmp_path / "voices", **opts), pauses)
    return add_noise(x, snr, seed) if snr else x


def turns_of(t):
    """The user's turns: transcripts not replaced by a continuation ("... and
    bring me water" joined to the "Go to the kitchen." before it)."""
    replaced = {u.replaces for u in t["heard"] if u.replaces}
    return [u for u in t["heard"] if u.turn_id not in replaced]


@pytest.mark.parametrize("speaker", list(SPEAKERS))
def test_sentences_with_inner_pauses_are_one_turn_each(ros, tmp_path, speaker):
    mic_pub, t = start_loop(ros, with_tts=False)
    mic = Microphone(ros, mic_pub)
    for i, (clauses, pause) in enumerate(zip(SENTENCES, PAUSES)):
        mic.say(speech_of(tmp_path, clauses, [pause] * (len(clauses) - 1), speaker, seed=i))
        mic.say(np.zeros(int(BETWEEN * 16000), np.float32))
    mic.run(lambda: not mic.speech, 120, "all speech played")
    mic.run(lambda: len(turns_of(t)) >= len(SENTENCES), 30, "every sentence transcribed")
    mic.run_for(1.5)
    heard = turns_of(t)
    assert len(heard) == len(SENTENCES), [u.text for u in heard]
    for clauses, u in zip(SENTENCES, heard):
        ref = " ".join(clauses)
        assert wer(ref, u.text) <= 0.3, (ref, u.text)
    # every pause sent for judgement was answered (a busy conversation
    # answers -1), and a turn the judge ended carries the words' score it
    # gave (beside the voice's and the decision, turn.judge both)
    # (whether the judge or vad.max_silence_ms ends a turn first depends on
    # the machine's speed: bench.sh measures it)
    asked = {(p.turn_id, p.revision) for p in t["partials"] if p.tentative_end and not p.is_final}
    assert asked, "no pause was sent for judgement"
    mic.run(lambda: asked <= {(e.turn_id, e.revision) for e in t["eot"]}, 30, "a judgement for every pause")
    for u in heard:
        assert u.end_of_turn_score < 0 or u.end_of_turn_audio_score >= 0, u
        assert u.end_of_turn_text_score < 0 or any(
            e.turn_id == u.turn_id and abs(e.probability - u.end_of_turn_text_score) < 1e-6 for e in t["eot"]), u

    # partial transcripts: during speech, revisions counting up, the
    # committed prefix never changing, the last one the final text. (Only
    # the newest hypothesis waits for Whisper and a final supersedes it: on a
    # busy machine a turn may have none before its final, so hypotheses are
    # required of the talk, not of every turn.)
    hypotheses = 0
    for u in heard:
        if u.replaces:
            continue  # a continuation's own partials cover only its part
        mine = [p for p in t["partials"] if p.turn_id == u.turn_id]
        assert mine, u.text
        hypotheses += len(mine) - 1
        assert [p.revision for p in mine] == sorted(p.revision for p in mine)
        for a, b in zip(mine, mine[1:]):
            assert b.stable.startswith(a.stable), (a.stable, b.stable)
        assert mine[-1].is_final and mine[-1].text == u.text
        assert not any(p.is_final for p in mine[:-1])
        # hypotheses are of the speech so far (when they are published
        # depends on the machine's speed: the partial lag is in TurnStats
        # and bench.sh)
        assert all(p.audio_duration_s <= u.audio_duration_s + 0.05 for p in mine[:-1]), u.text
    assert hypotheses >= 1, "no partial hypothesis during the talk"


def test_two_sentences_with_a_clear_pause_are_two_turns(ros, tmp_path):
    mic_pub, t = start_loop(ros, with_tts=False)
    mic = Microphone(ros, mic_pub)
    a = clause_audio(["What color is the sky on a clear day?"], tmp_path, voice="espeak")[0]
    b = clause_audio(["Please tell me a joke about robots."], tmp_path, voice="espeak")[0]
    mic.say(with_pauses([a, b], [1.6]))
    mic.run(lambda: len(t["heard"]) >= 2, 60, "two turns")
    mic.run_for(1.5)
    assert [wer(r, u.text) <= 0.3 for r, u in zip(
        ["What color is the sky on a clear day?", "Please tell me a joke about robots."], t["heard"])] == [True, True]
    assert len(t["heard"]) == 2


def test_a_sentence_cut_where_its_words_were_unfinished_is_joined_whatever_its_next_word(ros, tmp_path):
    """A judge that ends the turn at every pause (turn.end_threshold 0, no
    veto: a voice sure the user finished, as Smart Turn is at a clause said
    with a falling tone) cuts "When you get to the lab" from its sentence.
    The words had scored that fragment below turn.unfinished_below, so what
    the user says next within turn.continuation_ms completes it although it
    starts with "what", not "and/but/so": one request, answered once."""
    # the pause: 1.5 s, long enough for both judges on a loaded machine
    # (Whisper and the LLM), within turn.continuation_ms (2 s); silence
    # alone would end the turn only after 4 s
    mic_pub, t = start_loop(ros, with_tts=False, llm={"max_tokens": 24},
                            stt={"turn.end_threshold": 0.0, "turn.veto_below": 0.0, "vad.max_silence_ms": 4000})
    mic = Microphone(ros, mic_pub)
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    # (no comma: a transcript ending in one is open, not judged, and waits)
    clauses = ["When you get to the lab", "what is the temperature there?"]
    mic.say(speech_of(tmp_path, clauses, [1.5], "espeak-140wpm"))
    mic.run(lambda: any(u.replaces for u in t["heard"]), 60, "the sentence's second half joined to its first")
    mic.run_for(1.5)
    first, joined = t["heard"][0], t["heard"][-1]
    assert len(t["heard"]) == 2, [u.text for u in t["heard"]]
    # the fragment was ended by the judge (not by silence) while the words doubted it
    assert first.end_of_turn_score >= 0 and 0 <= first.end_of_turn_text_score < 0.2, first
    assert joined.replaces == first.turn_id
    assert wer(" ".join(clauses), joined.text) <= 0.3, joined.text
    mic.run(lambda: diag_value(diags, "stt_node", "turns_continued_unfinished") >= 1, 15, "the count in /diagnostics")
    # the whole request is answered; the fragment's reply, if it began, was ended
    mic.run(lambda: any(c.turn_id == joined.turn_id and c.is_final for c in t["chunks"]), 60, "the answer")
    assert any(c.text.strip() for c in t["chunks"] if c.turn_id == joined.turn_id)
    cut = [c for c in t["chunks"] if c.turn_id == first.turn_id]
    assert not cut or cut[-1].is_final, [c.text for c in cut]


def test_words_over_the_robot_are_answered_afterwards(ros, tmp_path):
    """barge_in off: speech while the robot talks is kept (not the half-duplex
    drop) and answered after the reply being spoken."""
    mic_pub, t = start_loop(ros, llm={"max_tokens": 60})
    mic = Microphone(ros, mic_pub)
    mic.say(utterance(tmp_path, "Please tell me a short story about a robot.", "story"))
    mic.run(lambda: any(m.data for m in t["speaking"]), 60, "the robot speaking")
    question = "What color is the sky on a clear day?"
    mic.say(utterance(tmp_path, question, "sky"))
    mic.run(lambda: len(t["heard"]) >= 2, 40, "the words spoken over the robot")
    over = t["heard"][1]
    assert over.while_robot_spoke and wer(question, over.text) <= 0.3, over
    mic.run(lambda: any(s.turn_id == over.turn_id for s in t["stats"]) and quiet(t)(), 90,
            "those words answered and spoken")
    story = [c for c in t["chunks"] if c.turn_id == t["heard"][0].turn_id]
    assert any(c.text.strip() for c in story), "the first reply was not spoken"
    assert len(t["interrupts"]) == 0


def test_two_minutes_of_talk_never_fall_behind(ros, tmp_path):
    """Continuous speech for two minutes (sentences with short pauses inside
    and between): replies never queue up behind each other."""
    mic_pub, t = start_loop(ros, llm={"max_tokens": 32})
    out = ros.collect(AudioFrame, "/audio_out", reliable(2000))
    mic = Microphone(ros, mic_pub)
    lines = [
        ["The weather was nice this morning,", "so we went for a walk."],
        ["After lunch", "we tested the new arm."],
        ["Can you remind me", "what time the meeting starts?"],
        ["The battery lasted", "for almost three hours today."],
        ["Tell me", "something funny about robots."],
        ["I think the kitchen", "needs to be cleaned again."],
    ]
    parts = [clause_audio(c, tmp_path / "voices", voice="espeak", wpm=160) for c in lines]
    rng = np.random.default_rng(7)
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < 120:
        clauses = parts[k % len(parts)]
        mic.say(with_pauses(clauses, list(rng.uniform(0.3, 0.7, len(clauses) - 1))))
        mic.say(np.zeros(int(rng.uniform(0.6, 1.2) * 16000), np.float32))
        mic.run(lambda: not mic.speech, 60, "speech played")
        k += 1
    talk_end = time.time()
    # the talk's last words are answered once the user stops (on a busy
    # machine transcription runs behind the talk: wait for it, not a time)
    first_seen, read = {}, [0]

    def a_reply_began_after_the_talk():
        for f in out[read[0]:]:
            first_seen.setdefault(f.turn_id, f.header.stamp.sec + f.header.stamp.nanosec * 1e-9)
        read[0] = len(out)
        return max(first_seen.values(), default=0.0) > talk_end
    mic.run(a_reply_began_after_the_talk, 180, "an answer after the talk ended")
    # when each turn's reply was first heard (audio_out carries the turn id)
    first_audio = {}
    for f in out:
        first_audio.setdefault(f.turn_id, f.header.stamp.sec + f.header.stamp.nanosec * 1e-9)
    stamp = lambda s: s.sec + s.nanosec * 1e-9  # noqa: E731
    ends = {u.turn_id: stamp(u.speech_end) for u in t["heard"]}
    published = {u.turn_id: stamp(u.header.stamp) for u in t["heard"]}
    answered = [k for k in first_audio if k in ends]
    assert len(t["heard"]) >= 8, [u.text for u in t["heard"]]
    assert len(answered) >= 3, (answered, len(t["heard"]))
    # a reply is heard before two newer sentences of the user were
    # transcribed, or not at all (a reply is dropped once a newer one of the
    # conversation comes): replies never queue up behind each other. Counted
    # in transcripts, not seconds, so a slow or busy machine does not decide
    # it (how far transcription itself lags under load is bench.sh's).
    for k in answered:
        later = sorted(p for j, p in published.items() if ends[j] > ends[k] and p < first_audio[k])
        assert len(later) <= 1, (k, round(first_audio[k] - ends[k], 2), len(later))
    # and the talk's last words are answered once the user stops
    assert max(first_audio.values()) > talk_end, "nothing answered after the talk ended"


def test_a_prefill_for_a_pause_never_reaches_outputs(ros):
    """A tentative end is judged and its prompt pre-filled; the user went on
    and the turn's text differs: nothing of the pre-filled text is spoken,
    published or sent to Nav2; the wasted tokens are counted. The same text
    confirmed reuses the pre-filled prompt."""
    places = str(ROOT / "config" / "places" / "example.yaml")
    llm = ros.start("llm_node", params={"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 4096, "parallel": 2,
                                        "temperature": 0.0, "use_mlock": False, "max_tokens": 48,
                                        "places_file": places})
    eots = ros.collect(EndOfTurn, "/end_of_turn")
    chunks = ros.collect(ReplyChunk, "/reply/chunk")
    texts = ros.collect(String, "/reply/text")
    goals = ros.collect(PoseStamped, "/goal_pose")
    intents = ros.collect(Intent, "/intent")
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    partial = ros.node.create_publisher(PartialTranscript, "/transcript/partial", reliable())
    final = ros.node.create_publisher(Utterance, "/transcript", reliable())
    ros.wait_matched(partial)
    ros.wait_matched(final)
    ros.wait_publisher("/end_of_turn")

    partial.publish(PartialTranscript(turn_id="t1", revision=3, text="Go to the kitchen.", tentative_end=True))
    ros.wait_for(lambda: len(eots) >= 1, 30, "end-of-turn judgement")
    e = eots[0]
    assert e.turn_id == "t1" and e.revision == 3 and 0 <= e.probability <= 1 and e.prefilled_tokens > 10
    ros.spin_for(1.0)
    assert chunks == [] and texts == [] and goals == [], "a judgement produced output"

    # the user went on: the turn is a stop, not the trip judged at the pause
    final.publish(Utterance(turn_id="t1", text="Stop!"))
    ros.wait_for(lambda: len(intents) >= 1, 60, "the turn's action")
    ros.spin_for(1.0)
    assert intents[0].turn_id == "t1" and intents[0].action == "stop", intents[0]
    assert goals == [], "a goal was sent for the pre-filled text"

    ros.wait_for(lambda: diag_value(diags, "llm_node", "prefill_wasted_tokens") > 0, 5, "wasted prefill counted")

    # confirmed as pre-filled: the prompt was already in the KV cache
    partial.publish(PartialTranscript(turn_id="t2", conversation_id="c2", revision=1,
                                      text="What is your battery level?", tentative_end=True))
    ros.wait_for(lambda: len(eots) >= 2, 30, "second judgement")
    final.publish(Utterance(turn_id="t2", conversation_id="c2", text="What is your battery level?"))
    ros.wait_for(lambda: any(c.turn_id == "t2" and c.is_final for c in chunks), 60, "second reply")
    first = next(c for c in chunks if c.turn_id == "t2")
    assert first.prefilled_tokens >= eots[1].prefilled_tokens - 1 > 0, (first.prefilled_tokens, eots[1])
    assert first.prompt_tokens <= 3, first.prompt_tokens
    assert llm.alive()
