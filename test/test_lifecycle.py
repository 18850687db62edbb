"""Managed (lifecycle) nodes driven as a lifecycle manager drives them:
lifecycle_msgs services called by an rclpy client (what `ros2 lifecycle set`
and Nav2's lifecycle_manager call), transition events watched, the nodes'
work checked on their real topics and actions."""
import time
from pathlib import Path

from action_msgs.msg import GoalStatus
from std_msgs.msg import Bool, String
from voice_agent.msg import AudioFrame

from va_harness import (LLM_MODEL, ONNXRUNTIME, PIPER_VOICE, SMART_TURN, VAD_MODEL, WHISPER_MODEL, ActionCaller, LifecycleCaller, Microphone, diag_value, latched,
                        quiet, reliable, rss_mb, start_loop, utterance, wer)


def test_tts_node_managed_configure_activate_deactivate_cleanup(ros):
    from diagnostic_msgs.msg import DiagnosticArray
    from voice_agent.action import Say
    node = ros.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME,
                                         "frame_ms": 40, "managed": True})
    lc = LifecycleCaller(ros, "/tts_node")
    frames = ros.collect(AudioFrame, "/audio_out")
    last_frame = [0.0]
    ros.node.create_subscription(AudioFrame, "/audio_out", lambda f: last_frame.__setitem__(0, time.monotonic()),
                                 reliable(500))
    speaking = ros.collect(Bool, "/speaking", latched())
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    say = ActionCaller(ros, Say, "/say")
    say_topic = ros.node.create_publisher(String, "/say", reliable())

    # unconfigured: nothing loaded, goals refused, activate refused
    assert lc.state() == "unconfigured"
    assert sorted(lc.available()) == ["configure", "shutdown"]
    assert lc.graph() == 25
    assert not say.send(text="Hello there.").accepted
    assert not lc.set("activate")
    assert lc.state() == "unconfigured"
    rss_bare = rss_mb(node)

    # configure loads the voice; inactive still refuses and ignores
    assert lc.set("configure")
    assert lc.state() == "inactive"
    rss_loaded = rss_mb(node)
    assert not say.send(text="Hello there.").accepted
    ros.wait_matched(say_topic)
    say_topic.publish(String(data="Nobody should hear this."))
    ros.wait_for(lambda: diag_value(diags, "tts_node", "ignored_while_inactive") >= 1, 10,
                 "the say message ignored while inactive")
    assert not frames

    # active: a goal is spoken
    assert lc.set("activate")
    assert lc.state() == "active"
    r = say.result(say.send(text="Please go to the kitchen."))
    assert r.status == GoalStatus.STATUS_SUCCEEDED and r.result.spoken, r
    assert frames

    # deactivate mid-sentence: the speech stops, the goal ends interrupted
    long_text = " ".join(["The robot should stop near the charging station."] * 6)
    h = say.send(text=long_text)
    assert h.accepted
    ros.wait_for(lambda: any(f.turn_id == "say-goal-2" for f in frames), 30, "the long goal heard")
    t_off = time.monotonic()
    assert lc.set("deactivate")
    r = say.result(h)
    assert r.status == GoalStatus.STATUS_ABORTED and r.result.reason == "interrupted", r
    ros.wait_for(lambda: not speaking[-1].data, 5, "speaking false after deactivate")
    n = len(frames)
    ros.spin_for(0.5)
    assert len(frames) - n <= 2, "audio went on after deactivate"
    print(f"deactivate asked -> last audio frame: {(last_frame[0] - t_off) * 1e3:.0f} ms")
    assert lc.state() == "inactive"

    # cleanup frees the voice: the memory goes back to the system (what
    # stays is onnxruntime's code, loaded once per process)
    rss_used = rss_mb(node)
    assert lc.set("cleanup")
    assert lc.state() == "unconfigured"
    rss_clean = rss_mb(node)
    voice_mb = PIPER_VOICE.stat().st_size / 2**20
    print(f"RSS: bare {rss_bare:.0f} MB, configured {rss_loaded:.0f} MB, after speaking {rss_used:.0f} MB, "
          f"cleaned up {rss_clean:.0f} MB (voice file {voice_mb:.0f} MB)")
    assert rss_loaded - rss_bare > 0.5 * voice_mb, (rss_bare, rss_loaded)
    assert rss_used - rss_clean > 0.5 * voice_mb, (rss_used, rss_clean)

    # configured again, it speaks again; shutdown from active finalizes
    assert lc.set("configure") and lc.set("activate")
    r = say.result(say.send(text="Okay."))
    assert r.status == GoalStatus.STATUS_SUCCEEDED, r
    assert lc.set("shutdown")
    assert lc.state() == "finalized"
    assert lc.available() == []

    # every transition was published, in order
    ros.wait_for(lambda: lc.events and lc.events[-1].goal_state.label == "finalized", 10, "the last event")
    goals = [e.goal_state.label for e in lc.events]
    assert goals == ["configuring", "inactive", "activating", "active", "deactivating", "inactive",
                     "cleaningup", "unconfigured", "configuring", "inactive", "activating", "active",
                     "shuttingdown", "finalized"], goals
    assert node.alive()


def test_unmanaged_node_starts_active_and_a_failed_configure_stays_unconfigured(ros):
    """Without `managed` the node configures and activates itself (as before);
    a managed node whose voice is missing fails configure with the file named
    and stays unconfigured, able to be configured again."""
    ros.start("tts_node", name="tts_plain", params={"engine": "espeak"})
    plain = LifecycleCaller(ros, "/tts_node")
    assert plain.state() == "active"
    bad = ros.start("tts_node", name="tts_bad", params={"voice_path": "/nonexistent/voice.onnx",
                                                         "onnxruntime_path": ONNXRUNTIME, "managed": True},
                    remaps={"__ns": "/bad"})
    lc = LifecycleCaller(ros, "/bad/tts_node")
    assert not lc.set("configure")
    assert lc.state() == "unconfigured"
    ros.wait_for(lambda: "/nonexistent/voice.onnx" in bad.log(), 10, "the missing voice named in the log")
    assert bad.alive()


def test_the_loop_brought_up_and_down_by_a_lifecycle_manager(ros, tmp_path):
    """stt_node, llm_node and tts_node started managed, driven as Nav2's
    lifecycle_manager drives them (configure all, activate all; deactivate
    and clean up in reverse): nothing is heard before activation (audio
    ignored and counted), a spoken request is answered once active,
    deactivating mid-reply stops the speech and closes the reply, cleanup
    frees the models."""
    from diagnostic_msgs.msg import DiagnosticArray
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    mic_pub, t = start_loop(ros, common={"managed": True})
    procs = {p.name: p for p in ros.procs}
    nodes = ["stt_node", "llm_node", "tts_node"]
    lcs = {n: LifecycleCaller(ros, f"/{n}") for n in nodes}
    assert {n: lc.state() for n, lc in lcs.items()} == {n: "unconfigured" for n in nodes}
    bare = {n: rss_mb(procs[n]) for n in nodes}
    assert not lcs["llm_node"].set("activate"), "activate without configure"
    mic = Microphone(ros, mic_pub)

    # unconfigured: the microphone is ignored (counted), nothing heard
    mic.say(utterance(tmp_path, "Hello robot, can you hear me?", "early"))
    mic.run(lambda: not mic.speech and diag_value(diags, "stt_node", "ignored_while_inactive") > 50, 30,
            "the early speech ignored")
    assert not t["heard"] and not t["partials"]

    # bring up: configure all, then activate all
    for n in nodes:
        assert lcs[n].set("configure"), n
    loaded = {n: rss_mb(procs[n]) for n in nodes}
    for n in nodes:
        assert lcs[n].set("activate"), n

    # active: a spoken request is answered aloud
    mic.pause()
    question = "What color is the sky on a clear day?"
    mic.say(utterance(tmp_path, question, "q"))
    mic.run(lambda: len(t["stats"]) >= 1 and quiet(t)(), 60, "a complete turn")
    assert wer(question, t["heard"][0].text) <= 0.25, t["heard"][0].text

    # deactivate mid-reply (tts, llm, stt: the manager's reverse order)
    mic.say(utterance(tmp_path, "Please tell me a long story about a robot and its friends.", "story"))
    mic.run(lambda: len(t["heard"]) >= 2 and t["speaking"][-1].data, 60, "the story being spoken")
    story = t["heard"][1].turn_id
    for n in reversed(nodes):
        assert lcs[n].set("deactivate"), n
    mic.pause()
    mic.run(lambda: not t["speaking"][-1].data, 5, "speaking false after deactivate")
    mic.run(lambda: any(c.turn_id == story and c.is_final for c in t["chunks"]), 10,
            "the story's reply closed with its final chunk")
    ignored = diag_value(diags, "stt_node", "ignored_while_inactive")
    n_heard, n_chunks = len(t["heard"]), len(t["chunks"])
    mic.say(utterance(tmp_path, "Are you still there?", "late"))
    mic.run(lambda: not mic.speech and diag_value(diags, "stt_node", "ignored_while_inactive") > ignored + 50, 30,
            "speech ignored while inactive")
    mic.run_for(1.0)
    assert len(t["heard"]) == n_heard and len(t["chunks"]) == n_chunks

    # cleanup frees the models: at least half their files' size goes back
    used = {n: rss_mb(procs[n]) for n in nodes}
    for n in reversed(nodes):
        assert lcs[n].set("cleanup"), n
    cleaned = {n: rss_mb(procs[n]) for n in nodes}
    model_mb = {n: sum(Path(m).stat().st_size for m in ms) / 2**20 for n, ms in
                [("stt_node", [WHISPER_MODEL, VAD_MODEL, SMART_TURN]), ("llm_node", [LLM_MODEL]),
                 ("tts_node", [PIPER_VOICE])]}
    for n in nodes:
        print(f"{n}: RSS bare {bare[n]:.0f} MB, configured {loaded[n]:.0f} MB, after the turns {used[n]:.0f} MB, "
              f"cleaned up {cleaned[n]:.0f} MB (model files {model_mb[n]:.0f} MB)")
    for n in nodes:
        assert loaded[n] - bare[n] > 0.5 * model_mb[n], (n, bare[n], loaded[n])
        assert used[n] - cleaned[n] > 0.5 * model_mb[n], (n, used[n], cleaned[n])
    assert all(lc.state() == "unconfigured" for lc in lcs.values())
    assert all(p.alive() for p in procs.values())


def test_audio_node_managed_opens_and_closes_the_devices(ros):
    """audio_node (simulated room): configure opens the devices (captured,
    not published), activate publishes, deactivate stops publishing,
    cleanup closes them (nothing captured any more)."""
    from diagnostic_msgs.msg import DiagnosticArray
    ros.start("audio_node", params={"backend": "sim", "managed": True})
    lc = LifecycleCaller(ros, "/audio_node")
    frames = ros.collect(AudioFrame, "/audio", reliable(500))
    diags = ros.collect(DiagnosticArray, "/diagnostics")

    def ignored():
        return diag_value(diags, "audio_node", "ignored_while_inactive")

    def status():
        return {v.key: v.value for v in diags[-1].status[0].values} if diags else {}

    assert lc.state() == "unconfigured"
    assert lc.set("configure")
    ros.wait_for(lambda: ignored() > 10, 15, "capture running while inactive")
    assert not frames
    assert lc.set("activate")
    ros.wait_for(lambda: len(frames) >= 10, 10, "capture published once active")
    assert lc.set("deactivate")
    n, before = len(frames), ignored()
    ros.wait_for(lambda: ignored() > before + 10, 15, "capture no longer published")
    assert len(frames) - n <= 2, "frames published after deactivate"
    assert lc.set("cleanup")
    ros.wait_for(lambda: status().get("lifecycle_state") == "unconfigured", 10, "cleanup in diagnostics")
    closed_at, seen = ignored(), len(diags)
    ros.wait_for(lambda: len(diags) >= seen + 2, 10, "two more diagnostics")
    assert ignored() == closed_at and len(frames) - n <= 2, "audio captured after cleanup"
    # opened again, it captures again
    assert lc.set("configure") and lc.set("activate")
    m = len(frames)
    ros.wait_for(lambda: len(frames) >= m + 10, 10, "capture published after reopening")
