"""Benchmarks: each node against its engine called directly, in the same run,
on the same machine, with ratios; and the whole loop, streaming against the
sequential alternative. Figures, never pass/fail.

    python scripts/bench.py                 # all: stt llm intent tts loop conversation first_chunk audio
    python scripts/bench.py llm intent tts  # some
    python scripts/bench.py fleet           # engine openai: N robots on one server vs local
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from va_harness import (BIN, LLM_MODEL, ONNXRUNTIME, PIPER_VOICE, ROOT, VAD_MODEL, WHISPER_MODEL,  # noqa: E402
                        Harness, Microphone, add_noise, diag_value, human_speech, pick_domain, clause_audio, latched,
                        publish_audio, read_wav, reliable, set_params, speak, start_loop, STT_MODELS, wer, with_pauses,
                        write_wav)

OUT = ROOT / "out" / "bench"
THREADS = 2
SENTENCES = [
    "Please go to the kitchen and bring me a glass of water.",
    "What is the weather like today?",
    "The robot should stop near the charging station.",
]
STORY = "Tell me a short story about a robot."
TTS_TEXT = ("The kitchen is at the end of the hallway. I will bring you a glass of water. "
            "The battery is at eighty five percent, so we can keep going.")
def harness(name):
    return Harness(pick_domain(), OUT / name)


def direct(*args) -> dict:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_llm(h, params):
    """Starts llm_node on `h` and waits until it is wired: returns the list
    collecting reply/chunk and a transcript publisher."""
    from voice_agent.msg import ReplyChunk, Utterance
    h.start("llm_node", params=params)
    chunks = h.collect(ReplyChunk, "/reply/chunk")
    pub = h.node.create_publisher(Utterance, "/transcript", reliable())
    h.wait_matched(pub)
    h.wait_publisher("/reply/chunk")
    return chunks, pub


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def stt():
    from voice_agent.msg import AudioFrame, Utterance
    print("\n== STT: stt_node vs whisper-rs called directly (Whisper tiny.en, 2 threads) ==")
    wavs = []
    for i, s in enumerate(SENTENCES):
        x, r = read_wav(speak(s, OUT / f"stt{i}.wav"))
        padded = OUT / f"stt{i}_padded.wav"  # what the node's VAD hands Whisper: speech + 200 ms pads
        write_wav(padded, np.concatenate([np.zeros(3200, np.float32), x[:, 0], np.zeros(3200, np.float32)]), r)
        wavs.append((x[:, 0], r, padded))
    sized = [direct(BIN / "stt_node", "--bench-direct", w, WHISPER_MODEL, THREADS, 3) for _, _, w in wavs]
    # the encoder window: sized to the clip (the node's default) vs Whisper's fixed 30 s
    full = [direct(BIN / "stt_node", "--bench-direct", w, WHISPER_MODEL, THREADS, 3, -1) for _, _, w in wavs]
    print(f"{'window':<10}{'median compute ms':>18}{'WER':>7}")
    for name, rows in (("sized", sized), ("30 s", full)):
        w = statistics.mean(wer(s, r["text"]) for s, r in zip(SENTENCES, rows))
        print(f"{name:<10}{med([r['compute_ms'] for r in rows]):>18.0f}{w:>7.3f}")
    print(f"sized window: {med([r['compute_ms'] for r in full]) / med([r['compute_ms'] for r in sized]):.1f} x faster")
    h = harness("stt")
    bare, node = [], []
    try:
        # stt_node alone (no judge): silence ends the turn; no partials, so
        # the node's one decode per turn compares with the bare call
        h.start("stt_node", params={"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "n_threads": THREADS,
                                    "reliable_audio": True, "vad.min_silence_ms": 500, "vad.max_silence_ms": 0,
                                    "turn.partial_interval_ms": 0})
        utts = h.collect(Utterance, "/transcript")
        pub = h.node.create_publisher(AudioFrame, "/audio", reliable())
        h.wait_matched(pub)
        h.wait_publisher("/transcript")

        def node_pass():
            for x, r, _ in wavs:
                n = len(utts)
                # trailing silence just past the 500 ms VAD hangover: the publisher
                # (this process) then stays idle while Whisper runs, as in the bare run
                publish_audio(h, pub, np.concatenate([np.zeros(r // 2, np.float32), x, np.zeros(int(r * 0.7), np.float32)]), r)
                h.wait_for(lambda: len(utts) > n, 60, "transcript")
            return utts[-len(wavs):]

        node_pass()  # warm-up
        # rounds side by side (bare, then node), so a slow spell of the
        # shared machine falls on both
        for _ in range(3):
            bare += [direct(BIN / "stt_node", "--bench-direct", w, WHISPER_MODEL, THREADS, 3) for _, _, w in wavs]
            node += node_pass()
    finally:
        h.close()
    print(f"{'sentence':<10}{'bare ms':>9}{'node ms':>9}{'bare RTF':>10}{'node RTF':>10}{'speech end->transcript':>24}")
    for i, (b, u) in enumerate(zip(bare, node)):
        print(f"{i % len(wavs) + 1:<10}{b['compute_ms']:>9.0f}{u.stt_compute_ms:>9.0f}{b['rtf']:>10.3f}"
              f"{u.stt_compute_ms / 1e3 / u.audio_duration_s:>10.3f}{u.end_of_speech_to_transcript_ms:>21.0f} ms")
    # the node decodes what its VAD cut (speech + its pads), a little longer
    # than the bare call's clip (200 ms pads): compute per second of audio
    # compares the two on equal terms
    b_rtf = med([b["rtf"] for b in bare])
    n_rtf = med([u.stt_compute_ms / 1e3 / u.audio_duration_s for u in node])
    print(f"median Whisper compute: bare {med([b['compute_ms'] for b in bare]):.0f} ms "
          f"({med([b['audio_s'] for b in bare]):.2f} s clips), node {med([u.stt_compute_ms for u in node]):.0f} ms "
          f"({med([u.audio_duration_s for u in node]):.2f} s clips); per second of audio: bare RTF {b_rtf:.3f}, "
          f"node {n_rtf:.3f} -> node speed = {b_rtf / n_rtf:.2f} x bare (goal >= 0.95; {len(node)} turns)")
    print(f"median end of speech -> transcript in the node: {med([u.end_of_speech_to_transcript_ms for u in node]):.0f} ms "
          f"(silence alone ends the turn here: includes a 500 ms hangover; with llm_node judging, see conversation)")


def llm():
    from voice_agent.msg import Utterance
    print("\n== LLM: llm_node vs a bare llama-cpp-2 loop (SmolLM2-135M Q4_1, 2 threads, greedy) ==")
    bare = direct(BIN / "llm_node", "--bench-bare", LLM_MODEL, THREADS, 64, 3, STORY)
    common = {"model_path": LLM_MODEL, "n_threads": THREADS, "temperature": 0.0, "max_tokens": 64,
              "use_mlock": False, "flash_attn": True, "n_gpu_layers": 0}
    h = harness("llm")
    try:
        # one conversation: the same context size and settings as the bare loop
        chunks, pub = start_llm(h, {**common, "ctx_size": 2048, "parallel": 1})
        singles = []
        for k in range(4):
            tid = f"single{k}"
            pub.publish(Utterance(turn_id=tid, conversation_id=f"c{k}", text=STORY))
            h.wait_for(lambda: any(c.turn_id == tid and c.is_final for c in chunks), 60, "reply")
            singles.append([c for c in chunks if c.turn_id == tid])
        singles = singles[1:]  # the first warms up
    finally:
        h.close()
    h = harness("llm-parallel")
    try:
        chunks, pub = start_llm(h, {**common, "ctx_size": 8192, "parallel": 8})
        agg = {}
        for n in (1, 1, 2, 4, 8):  # N=1 twice: the first warms up
            ids = [f"par{n}-{k}-{time.monotonic_ns()}" for k in range(n)]
            t0 = time.time()
            for k, tid in enumerate(ids):
                pub.publish(Utterance(turn_id=tid, conversation_id=tid, text=STORY))
            h.wait_for(lambda: all(any(c.turn_id == t and c.is_final for c in chunks) for t in ids), 120, "replies")
            finals = [next(c for c in chunks if c.turn_id == t and c.is_final) for t in ids]
            t1 = max(f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in finals)
            agg[n] = sum(f.generated_tokens for f in finals) / (t1 - t0)
    finally:
        h.close()
    finals = [next(c for c in s if c.is_final) for s in singles]
    firsts = [min(s, key=lambda c: c.index) for s in singles]
    node_ttft = med([f.first_token_ms for f in finals])
    node_tps = med([f.tokens_per_s for f in finals])
    node_prompt_tps = med([f.prompt_tokens / (f.first_token_ms / 1e3) for f in finals])
    print(f"{'':<28}{'bare':>10}{'node':>10}{'node/bare':>11}")
    print(f"{'prompt tok/s':<28}{bare['prompt_tps']:>10.0f}{node_prompt_tps:>10.0f}{node_prompt_tps / bare['prompt_tps']:>11.2f}")
    print(f"{'generation tok/s':<28}{bare['gen_tps']:>10.1f}{node_tps:>10.1f}{node_tps / bare['gen_tps']:>11.2f}")
    print(f"{'time to first token ms':<28}{bare['ttft_ms']:>10.0f}{node_ttft:>10.0f}{bare['ttft_ms'] / node_ttft:>11.2f}")
    print(f"{'time to first chunk ms':<28}{'-':>10}{med([c.first_chunk_ms for c in firsts]):>10.0f}")
    print(f"(node ttft counts from the transcript's arrival: queue hop + prompt of {finals[0].prompt_tokens} tokens; "
          f"bare prompt {bare['prompt_tokens']} tokens)")
    print("aggregate generation with N conversations at once (continuous batching):")
    for n, v in agg.items():
        print(f"  N={n}: {v:6.1f} tok/s  ({v / agg[1]:.2f} x N=1)")


def intent():
    """The intent layer's cost: the same llm_node with and without a places
    file (grammar-constrained JSON actions), same requests, one run."""
    from geometry_msgs.msg import PoseStamped
    from voice_agent.msg import Utterance
    print("\n== Intents: llm_node with places_file (constrained actions) vs without (SmolLM2-135M, 2 threads) ==")
    common = {"model_path": LLM_MODEL, "n_threads": THREADS, "temperature": 0.0, "max_tokens": 64,
              "use_mlock": False, "flash_attn": True, "n_gpu_layers": 0, "ctx_size": 2048, "parallel": 1}
    answers = ["What color is the sky?", STORY, "What is the capital of France?"]
    res = {}
    for mode, extra in (("off", {}), ("on", {"places_file": ROOT / "config" / "places" / "example.yaml",
                                            "nav_mode": "topic"})):
        h = harness(f"intent-{mode}")
        try:
            chunks, pub = start_llm(h, {**common, **extra})
            got_goal = []
            h.node.create_subscription(PoseStamped, "/goal_pose", lambda m: got_goal.append(time.monotonic()),
                                       reliable())
            rows = []
            for rep in range(3):  # the first round warms up
                for k, q in enumerate(answers):
                    tid = f"{mode}-{rep}-{k}"
                    pub.publish(Utterance(turn_id=tid, conversation_id=tid, text=q))
                    h.wait_for(lambda: any(c.turn_id == tid and c.is_final for c in chunks), 60, "reply")
                    if rep:
                        fin = next(c for c in chunks if c.turn_id == tid and c.is_final)
                        first = min((c for c in chunks if c.turn_id == tid), key=lambda c: c.index)
                        rows.append((first.first_chunk_ms, fin.tokens_per_s, fin.prompt_tokens))
            nav = []
            if mode == "on":
                h.wait_publisher("/goal_pose")
                for rep in range(4):
                    tid = f"nav-{rep}"
                    t0 = time.monotonic()
                    n_goals = len(got_goal)
                    pub.publish(Utterance(turn_id=tid, conversation_id=tid, text="Go to the kitchen."))
                    h.wait_for(lambda: len(got_goal) > n_goals, 60, "goal")
                    if rep:
                        nav.append((got_goal[-1] - t0) * 1e3)
            res[mode] = (rows, nav)
        finally:
            h.close()
    off, on = res["off"][0], res["on"][0]
    print(f"{'answer turns (median)':<32}{'off':>10}{'on':>10}{'on/off':>9}")
    for name, i in (("first chunk ms", 0), ("generation tok/s", 1), ("prompt tokens evaluated", 2)):
        a, b = med([r[i] for r in off]), med([r[i] for r in on])
        print(f"{name:<32}{a:>10.0f}{b:>10.0f}{b / a:>9.2f}")
    print(f"navigate_to: request -> PoseStamped on goal_pose, median {med(res['on'][1]):.0f} ms "
          f"(prompt + ~10 constrained tokens)")


def tts():
    from std_msgs.msg import String
    from voice_agent.msg import AudioFrame
    print("\n== TTS: tts_node vs the engine called directly (3 sentences) ==")
    print(f"{'engine':<8}{'bare first ms':>14}{'node first ms':>14}{'bare RTF':>10}{'node RTF':>10}{'first: bare/node':>18}")
    for engine in ("piper", "espeak"):
        bare = direct(BIN / "tts_node", "--bench-direct", engine, PIPER_VOICE, ONNXRUNTIME, TTS_TEXT)
        h = harness(f"tts-{engine}")
        try:
            h.start("tts_node", params={"engine": engine, "voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME,
                                        "realtime": False, "sentence_silence": 0.0, "n_threads": THREADS})
            frames = []
            arrivals = []
            h.node.create_subscription(AudioFrame, "/audio_out",
                                       lambda f: (frames.append(f), arrivals.append(time.monotonic())), reliable(2000))
            say = h.node.create_publisher(String, "/say", reliable())
            h.wait_matched(say)
            h.wait_publisher("/audio_out")
            h.wait_for(lambda: h.node.count_subscribers("/audio_out") >= 1, 10, "match")
            runs = []
            for k in range(3):
                n0 = len(frames)
                t0 = time.monotonic()
                say.publish(String(data="Hello." if k == 0 else TTS_TEXT))
                h.wait_for(lambda: len(frames) > n0, 30, "audio")
                last = 0
                while True:  # until no frame for 0.5 s
                    h.spin_for(0.5)
                    if len(frames) == last:
                        break
                    last = len(frames)
                if k == 0:
                    continue
                audio_s = sum(len(f.data) // 2 for f in frames[n0:]) / frames[n0].sample_rate
                runs.append(((arrivals[n0] - t0) * 1e3, (arrivals[-1] - t0) / audio_s))
        finally:
            h.close()
        first = med([r[0] for r in runs])
        rtf = med([r[1] for r in runs])
        print(f"{engine:<8}{bare['first_audio_ms']:>14.0f}{first:>14.0f}{bare['rtf']:>10.3f}{rtf:>10.3f}"
              f"{bare['first_audio_ms'] / first:>18.2f}")


def loop(requests=None, relay_whole=False):
    from std_msgs.msg import Bool
    from voice_agent.msg import AudioFrame, ReplyChunk, TurnStats
    from rclpy.qos import qos_profile_sensor_data
    profile = ["--params-file", str(ROOT / "config" / "cpu_small.yaml")]
    h = harness("loop-seq" if relay_whole else "loop")
    try:
        h.start("stt_node", params=STT_MODELS, extra_args=profile)
        h.start("llm_node", params={"model_path": LLM_MODEL, "max_tokens": 64}, extra_args=profile)
        h.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME}, extra_args=profile,
                remaps={"reply/chunk": "/bench/whole_reply"} if relay_whole else None)
        stats = h.collect(TurnStats, "/turn_stats")
        speaking = h.collect(Bool, "/speaking", latched())
        if relay_whole:
            # the sequential alternative: synthesis starts only when the whole reply exists
            relay = h.node.create_publisher(ReplyChunk, "/bench/whole_reply", reliable())
            parts = {}

            def on_chunk(c):
                parts.setdefault(c.turn_id, []).append(c)
                if c.is_final:
                    whole = sorted(parts.pop(c.turn_id), key=lambda x: x.index)
                    first = whole[0]
                    first.text = "".join(x.text for x in whole)
                    first.is_final = True
                    first.tokens_per_s = c.tokens_per_s
                    first.generated_tokens = c.generated_tokens
                    relay.publish(first)
            h.node.create_subscription(ReplyChunk, "/reply/chunk", on_chunk, reliable())
        mic = h.node.create_publisher(AudioFrame, "/audio", qos_profile_sensor_data)
        h.wait_matched(mic, timeout=60)
        h.wait_publisher("/turn_stats", timeout=60)
        publish_audio(h, mic, np.zeros(16000, np.float32), 16000)
        for i, text in enumerate(requests):
            x, r = read_wav(speak(text, OUT / f"loop{i}.wav"))
            n = len(stats)
            publish_audio(h, mic, np.concatenate([np.zeros(4800, np.float32), x[:, 0], np.zeros(4800, np.float32)]), r)
            t0 = time.monotonic()
            while not (len(stats) > n and speaking and not speaking[-1].data):
                publish_audio(h, mic, np.zeros(1600, np.float32), r)
                if time.monotonic() - t0 > 90:
                    raise RuntimeError("no turn")
        return list(stats)
    finally:
        h.close()


def loop_bench():
    # requests with multi-sentence answers: where streaming matters
    requests = ["Please tell me a short story about a robot.", "Tell me a short story about a dog.",
                "Please tell me a short story about a robot."]
    print("\n== Loop: end of speech -> first audio out (cpu_small: tiny.en, SmolLM2-135M, Piper; 2 cores) ==")
    streaming = loop(requests)
    sequential = loop(requests, relay_whole=True)
    print(f"{'turn':<6}{'stt':>7}{'(whisper)':>10}{'llm 1st chunk':>14}{'tts 1st audio':>14}{'e2e':>8}{'overhead':>10}")
    over = []
    for i, s in enumerate(streaming):
        o = s.end_of_speech_to_first_audio_ms - s.stt_ms - s.llm_first_chunk_ms - s.tts_first_audio_ms
        over.append(o)
        print(f"{i + 1:<6}{s.stt_ms:>7.0f}{s.stt_compute_ms:>10.0f}{s.llm_first_chunk_ms:>14.0f}"
              f"{s.tts_first_audio_ms:>14.0f}{s.end_of_speech_to_first_audio_ms:>8.0f}{o:>10.1f}")
    stt_over = [s.stt_ms - s.stt_compute_ms - s.end_of_turn_wait_ms for s in streaming]
    e2e_s = med([s.end_of_speech_to_first_audio_ms for s in streaming])
    e2e_q = med([s.end_of_speech_to_first_audio_ms for s in sequential])
    print(f"pipeline overhead between stages (e2e - stt - llm first chunk - tts first audio): median {med(over):.1f} ms")
    print(f"inside stt (speech end -> transcript - whisper - silence waited): median {med(stt_over):.0f} ms "
          "(negative: Whisper ran during the pause, before the turn ended)")
    print(f"streaming e2e median {e2e_s:.0f} ms vs sequential (whole reply, then TTS) {e2e_q:.0f} ms: "
          f"streaming is {e2e_q - e2e_s:.0f} ms ({e2e_q / e2e_s:.2f} x) faster to first audio")


# sentences spoken the way people speak them: pauses inside (at commas,
# between clauses), two voices, three rates, room noise
PAUSED = [
    (["When you get to the lab,", "tell me how warm it is."], [0.7]),
    (["Please go to the kitchen,", "and bring me a glass of water."], [0.9]),
    (["I was wondering,", "do you know where the charging dock is?"], [0.6]),
    (["What color is the sky", "on a clear day?"], [0.5]),
    (["Tell me", "a short story about a robot."], [0.8]),
]
SPEAKERS = [dict(voice="espeak", wpm=140), dict(voice="piper", length_scale=1.2, snr_db=25),
            dict(voice="espeak", wpm=175, snr_db=20), dict(voice="piper", length_scale=0.9)]


def conversation(preempt_above=0.1):
    """The paused-speech set through the whole loop (cpu_small, turn.judge
    both): fragments per sentence, WER, and end of speech -> first audio with
    its breakdown; side by side, per speaker, llm_node without and with
    preemptive replies (preempt_above), with what preemption wasted."""
    from voice_agent.msg import AudioFrame
    from diagnostic_msgs.msg import DiagnosticArray
    print("\n== Conversation: sentences with pauses inside, 4 speakers x 5 sentences (cpu_small, 2 cores), "
          f"preemptive replies off vs on (preempt_above {preempt_above}) ==")
    variants = {"off": {}, "preempt": {"preempt_above": preempt_above}}
    res = {v: {"rows": [], "frags": [], "wers": [], "joined": 0, "diag": {}} for v in variants}
    for k, spk in enumerate(SPEAKERS):
        opts = dict(spk)
        snr = opts.pop("snr_db", None)
        name = f"{opts.get('voice')} {opts.get('wpm', opts.get('length_scale'))}" + (f" {snr} dB" if snr else "")
        for v, llm_extra in variants.items():
            r = res[v]
            h = harness(f"conversation-{k}-{v}")
            try:
                mic_pub, t = start_loop(h, llm={"max_tokens": 48, **llm_extra})
                h.collect(AudioFrame, "/audio_out", reliable(4000))
                diags = h.collect(DiagnosticArray, "/diagnostics")
                mic = Microphone(h, mic_pub)
                for i, (clauses, pauses) in enumerate(PAUSED):
                    x = with_pauses(clause_audio(clauses, OUT / "voices", **opts), pauses)
                    mic.say(add_noise(x, snr, i) if snr else x)
                    n = len(t["stats"])
                    mic.run(lambda: len(t["stats"]) > n and not t["speaking"][-1].data, 90, "answer spoken")
                    mic.run_for(1.0)
                mic.run_for(2.5)  # the last diagnostics
                replaced = {u.replaces for u in t["heard"] if u.replaces}
                turns = [u for u in t["heard"] if u.turn_id not in replaced]
                r["frags"].append(len(t["heard"]) - len(PAUSED))
                r["joined"] += len(replaced)
                for (clauses, _), u in zip(PAUSED, turns):
                    r["wers"].append(wer(" ".join(clauses), u.text))
                r["rows"] += list(t["stats"])
                for node, key in (("llm_node", "preempted"), ("llm_node", "preempt_confirmed"),
                                  ("llm_node", "preempt_discarded"), ("llm_node", "preempt_wasted_tokens"),
                                  ("tts_node", "held_released"), ("tts_node", "held_discarded"),
                                  ("tts_node", "held_wasted_synthesis_ms")):
                    r["diag"][key] = r["diag"].get(key, 0) + diag_value(diags, node, key)
            finally:
                h.close()
            print(f"  speaker {name:<22} {v:<8} transcripts {len(t['heard'])} for {len(PAUSED)} sentences "
                  f"({len(replaced)} continuations joined), turns answered {len(t['stats'])}", flush=True)
    n_sent = len(SPEAKERS) * len(PAUSED)
    for v, r in res.items():
        rows = r["rows"]
        e2e = [s.end_of_speech_to_first_audio_ms for s in rows if s.end_of_speech_to_first_audio_ms > 0]
        print(f"-- {v}:")
        print(f"  extra transcripts per sentence (a pause that ended the turn): {sum(r['frags']) / n_sent:.2f}, "
              f"joined back as continuations: {r['joined']}")
        print(f"  WER of the answered turns vs the sentence: mean {statistics.mean(r['wers']):.3f}")
        print(f"  end of speech -> first audio: median {med(e2e):.0f} ms, p95 {np.percentile(e2e, 95):.0f} ms "
              f"over {len(e2e)} turns")
        for name, f in (("end of turn: silence waited", lambda s: s.end_of_turn_wait_ms),
                        ("stt: speech end -> transcript", lambda s: s.stt_ms),
                        ("llm: transcript -> first chunk", lambda s: s.llm_first_chunk_ms),
                        ("tts: first chunk -> first audio", lambda s: s.tts_first_audio_ms),
                        ("prompt tokens pre-filled at the pause", lambda s: s.prefilled_tokens),
                        ("end-of-turn score (-1 = silence)", lambda s: s.end_of_turn_score)):
            print(f"  {name:<40} median {med([f(s) for s in rows]):8.2f}")
        if r["diag"].get("preempted"):
            d = r["diag"]
            print(f"  preemptive replies: {d['preempted']:.0f} prepared, {d['preempt_confirmed']:.0f} taken over, "
                  f"{d['preempt_discarded']:.0f} discarded ({d['preempt_wasted_tokens']:.0f} tokens wasted); "
                  f"tts_node: {d['held_released']:.0f} held first chunks spoken, {d['held_discarded']:.0f} discarded "
                  f"({d['held_wasted_synthesis_ms']:.0f} ms of synthesis wasted)")


def turn_judge():
    """End of turn judged from the words, the voice, or both: real people
    (human_speech: each recording is one turn, ending where the person
    stopped) and the synthetic paused set (pauses inside sentences; its
    clauses are spoken alone, so the voice falls at every pause: it tests
    the words' side only). Premature cuts at inner pauses and the silence
    waited at real ends, per judge, switched at runtime on one stt_node."""
    from voice_agent.msg import PartialTranscript
    print("\n== End of turn: turn.judge text / audio / both (cpu_small, 2 cores) ==")
    human = human_speech()
    synthetic = [(" ".join(c), with_pauses(clause_audio(c, OUT / "voices"), p), len(p)) for c, p in PAUSED]
    h = harness("turn_judge")
    table = {}
    try:
        mic_pub, t = start_loop(h, with_tts=False, stt={"turn.judge": "both"}, llm={"max_tokens": 16})
        tentative = h.collect(PartialTranscript, "/transcript/partial")
        mic = Microphone(h, mic_pub)

        def say(x):
            """One recording, then silence until its turn is out; returns its
            transcripts and the tentative ends (pauses judged) heard meanwhile."""
            n0, p0 = len(t["heard"]), len(tentative)
            mic.say(x)
            mic.run(lambda: not mic.speech, 60, "speech sent")
            # the longest wait (vad.max_silence_ms) and Whisper's final
            mic.run_for(1.6)
            end = time.monotonic() + 15
            mic.run(lambda: len(t["heard"]) > n0 or time.monotonic() > end, 30, "its transcript")
            mic.run_for(0.5)
            pauses = sum(1 for p in tentative[p0:] if p.tentative_end)
            return t["heard"][n0:], pauses

        for judge in ("text", "audio", "both"):
            set_params(h, "stt_node", **{"turn.judge": judge})
            r = table[judge] = {"ends": [], "by_score": 0, "human_pauses": 0, "human_cuts": 0, "lost": [],
                                "syn_pauses": 0, "syn_cuts": 0, "syn_ends": [], "scores": []}
            for name, x, _ in human:
                heard, pauses = say(x)
                if not heard:  # not a turn (e.g. Whisper looping on a short clip: rejected)
                    r["lost"].append(name)
                    continue
                r["human_cuts"] += len(heard) - 1
                r["human_pauses"] += max(0, pauses - 1)  # the last judged pause is the real end
                last = heard[-1]
                r["ends"].append(last.end_of_turn_wait_ms)
                r["by_score"] += last.end_of_turn_score >= 0
                r["scores"].append((name, last.end_of_turn_text_score, last.end_of_turn_audio_score))
            for text, x, n_pauses in synthetic:
                heard, _ = say(x)
                if not heard:
                    r["lost"].append(text)
                    continue
                r["syn_pauses"] += n_pauses
                r["syn_cuts"] += len(heard) - 1
                r["syn_ends"].append(heard[-1].end_of_turn_wait_ms)
            print(f"  {judge:<5}: real people {len(r['ends'])} turns: silence waited at the real end median "
                  f"{med(r['ends']):.0f} ms (p90 {np.percentile(r['ends'], 90):.0f}), ended by the judge "
                  f"{r['by_score']}/{len(r['ends'])}; inner pauses judged {r['human_pauses']}, cut "
                  f"{r['human_cuts']}; synthetic: {r['syn_cuts']} cuts at {r['syn_pauses']} inner pauses, "
                  f"end waited median {med(r['syn_ends']):.0f} ms"
                  + (f"; no transcript for {', '.join(r['lost'])}" if r["lost"] else ""), flush=True)
    finally:
        h.close()
    print("  scores at the real ends of the human recordings (words / voice), judge both:")
    for name, ts, au in table["both"]["scores"]:
        print(f"    {name:<14} {ts:6.3f} / {au:6.3f}")


FIRST_CHUNK_PROMPTS = [
    "Explain what the saying ask not what your country can do for you means.",
    "Describe the kitchen of a large and busy restaurant.",
    "Why is the sky blue during the day and red in the evening?",
    "Tell me about the history of robots in factories.",
    "What should I pack for a hiking trip in the mountains?",
    "How does a cleaning robot find its way around a house?",
]


def first_chunk():
    """The reply's first chunk cut after its first words (llm_node
    first_chunk_words) vs at its first sentence or clause only (0), side by
    side on the same text prompts (greedy: the same replies): TTS first
    audio, prompt -> first audio, and whether the split is audible to a
    listener: Whisper tiny.en transcribing the spoken reply, WER against the
    reply text, split vs whole."""
    from voice_agent.msg import AudioFrame, TurnStats, Utterance
    from std_msgs.msg import Bool, String
    print("\n== First chunk: cut after its first words vs at its first sentence (llm + tts Piper + Whisper listener) ==")
    prof = ["--params-file", str(ROOT / "config" / "cpu_small.yaml")]
    res = {}
    for words in (0, 6):
        h = harness(f"first-chunk-{words}")
        try:
            h.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME,
                                        "noise_scale": 0.0, "noise_w": 0.0}, extra_args=prof)
            h.start("stt_node", name="listener", extra_args=prof,
                    params={"model_path": WHISPER_MODEL, "vad.model_path": VAD_MODEL, "reliable_audio": True,
                            "vad.min_silence_ms": 700, "vad.max_silence_ms": 0},
                    remaps={"audio": "/audio_out", "speaking": "/not_speaking", "transcript": "/heard",
                            "reply/chunk": "/not_reply", "say": "/not_say"})
            chunks, pub = start_llm(h, {"model_path": LLM_MODEL, "temperature": 0.0, "max_tokens": 48,
                                        "first_chunk_words": words, "n_threads": THREADS})
            stats = h.collect(TurnStats, "/turn_stats")
            replies = h.collect(String, "/reply/text")
            heard = h.collect(Utterance, "/heard")
            speaking = h.collect(Bool, "/speaking", latched())
            first_audio = {}
            h.node.create_subscription(AudioFrame, "/audio_out",
                                       lambda f: first_audio.setdefault(f.turn_id, time.monotonic()), reliable(2000))
            h.wait_publisher("/turn_stats", timeout=60)
            h.wait_publisher("/heard", timeout=60)
            rows = []
            for i, text in enumerate(FIRST_CHUNK_PROMPTS):
                turn = f"fc{words}-{i}"
                n_heard, n_replies = len(heard), len(replies)
                t0 = time.monotonic()
                pub.publish(Utterance(turn_id=turn, conversation_id=turn, text=text))
                h.wait_for(lambda: any(s.turn_id == turn for s in stats) and len(replies) > n_replies, 90,
                           "the reply spoken")
                h.wait_for(lambda: speaking and not speaking[-1].data, 90, "the reply finished")
                h.wait_for(lambda: len(heard) > n_heard, 60, "the listener's transcript")
                h.spin_for(2.5)  # the rest of a reply the listener cut in two
                s = next(s for s in stats if s.turn_id == turn)
                said = " ".join(u.text for u in heard[n_heard:])
                first = [c.text for c in chunks if c.turn_id == turn and c.index == 0]
                rows.append(dict(tts=s.tts_first_audio_ms, llm=s.llm_first_chunk_ms,
                                 e2e=(first_audio[turn] - t0) * 1e3, wer=wer(replies[n_replies].data, said),
                                 first=first[0] if first else "", reply=replies[n_replies].data))
            res[words] = rows
        finally:
            h.close()
    for words, rows in res.items():
        label = f"first_chunk_words {words}" + (" (off)" if words == 0 else "")
        print(f"  {label:<26} tts first audio median {med([r['tts'] for r in rows]):5.0f} ms, "
              f"llm first chunk {med([r['llm'] for r in rows]):5.0f} ms, prompt -> first audio "
              f"{med([r['e2e'] for r in rows]):5.0f} ms; WER of the spoken reply {statistics.mean(r['wer'] for r in rows):.3f}")
    for a, b in zip(res[0], res[6]):
        print(f"    {a['tts']:5.0f} -> {b['tts']:5.0f} ms  WER {a['wer']:.2f} -> {b['wer']:.2f}  first chunk "
              f"{a['first']!r} -> {b['first']!r}")
    ratio = med([r['e2e'] for r in res[6]]) / med([r['e2e'] for r in res[0]])
    print(f"  prompt -> first audio, cut / not cut: {ratio:.2f}")

HISTORY_PROMPTS = [
    "Hello robot, what is your name?", "Where is the kitchen?", "Can you bring me a cup of tea?",
    "What time do you charge your battery?", "Tell me a fact about the moon.", "What is the capital of France?",
    "How many legs does a spider have?", "Please tell me a short joke.", "What colour is the sky at night?",
    "Which room is the warmest in a house?", "What do plants need to grow?", "Name a fruit that is yellow.",
    "How do you find your way around?", "What is two plus three?", "Why do cats purr?",
    "What should I cook for dinner?", "How far away is the sun?", "What is your favourite song?",
    "Can you open the door for me?", "Thank you, goodbye.",
]


def history():
    """One long conversation through llm_node (history_turns 6): the prompt
    tokens each turn evaluates and its time to first token. A turn whose
    history was just forgotten evaluates it again from its start; the others
    reuse the KV cache and evaluate only the last reply and the new text.
    History is forgotten half a bound at a time (3 exchanges here), so that
    happens on one turn in three once the history is full; forgetting one
    exchange per turn (before) made it every turn. The conversation has a
    continuation in it (turn 11 replaced by 12, which carries both texts) and
    a barge-in (turn 15's reply interrupted after its first chunk). Side by
    side in one run: the turns that evaluated the history vs those that
    reused it."""
    from voice_agent.msg import Interrupt, Utterance
    print("\n== History: prompt evaluated per turn, one 20-turn conversation (llm_node SmolLM2, greedy, history_turns 6) ==")
    h = harness("history")
    try:
        chunks, pub = start_llm(h, {"model_path": LLM_MODEL, "n_threads": THREADS, "temperature": 0.0,
                                    "max_tokens": 40, "history_turns": 6, "parallel": 1, "ctx_size": 2048,
                                    "use_mlock": False})
        stop = h.node.create_publisher(Interrupt, "/interrupt", reliable())
        h.wait_matched(stop)
        rows = []
        for i, text in enumerate(HISTORY_PROMPTS):
            tid, replaces = f"h{i}", ""
            if i == 12:  # the user went on: "... and ..." joined to turn 11, which it replaces
                text, replaces = f"{HISTORY_PROMPTS[11]} {text}", "h11"
            pub.publish(Utterance(turn_id=tid, conversation_id="one", text=text, replaces=replaces))
            if i == 15:  # barge-in: the reply stopped after its first chunk
                h.wait_for(lambda: any(c.turn_id == tid for c in chunks), 90, "the first chunk")
                stop.publish(Interrupt(target="one", reason="bench barge-in"))
            h.wait_for(lambda: any(c.turn_id == tid and c.is_final for c in chunks), 90, "reply")
            f = next(c for c in chunks if c.turn_id == tid and c.is_final)
            rows.append((f.prompt_tokens, f.first_token_ms))
    finally:
        h.close()
    full = rows[7:]  # the history is full from turn 7 on (6 exchanges)
    cut = (min(r[0] for r in full) + max(r[0] for r in full)) / 2
    again = [r for r in full if r[0] > cut]
    kept = [r for r in full if r[0] <= cut]
    print("  turn: prompt tokens evaluated / first token ms (12 continues 11, 15 interrupted)")
    print("  " + "  ".join(f"{i}:{p}/{t:.0f}" for i, (p, t) in enumerate(rows)))
    print(f"  turns 7-19 (history full): mean {statistics.mean(r[0] for r in full):.0f} prompt tokens evaluated, "
          f"mean first token {statistics.mean(r[1] for r in full):.0f} ms")
    print(f"  of those, {len(again)} evaluated the history again (median {med([r[0] for r in again]):.0f} "
          f"tokens, first token {med([r[1] for r in again]):.0f} ms), {len(kept)} reused it (median "
          f"{med([r[0] for r in kept]):.0f} tokens, first token {med([r[1] for r in kept]):.0f} ms)")


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far [s]."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


AEC_TEXT = ("Sure. The kitchen is down the hall on the left, past the charging dock and the big window. "
            "I can take you there if you like, or I can bring you something to drink while you wait.")


def audio():
    """audio_node on the simulated room: echo return loss enhancement per echo
    path (offline, audio_node --bench-aec on espeak speech), false turns per
    minute of robot speech with and without AEC (barge-in on), barge-in
    reaction (user speech onset -> interrupt), capture -> `audio` latency, and
    the node's CPU with AEC on / off."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool, String
    from voice_agent.msg import AudioFrame, Interrupt, Utterance
    print("\n== audio_node: echo cancellation on the simulated room (2 cores) ==")
    wavs = [speak(AEC_TEXT, OUT / "aec1.wav"),
            speak("My battery is at forty two percent, enough for three more hours of work today.",
                  OUT / "aec2.wav", voice="en-us+f3", wpm=140)]
    r = subprocess.run([str(BIN / "audio_node"), "--bench-aec", *map(str, wavs)], capture_output=True, text=True,
                       check=True)
    print(r.stdout.rstrip())

    prof = ["--params-file", str(ROOT / "config" / "cpu_small.yaml")]
    for aec in (True, False):
        h = harness(f"audio-echo-{aec}")
        try:
            node = h.start("audio_node", params={"backend": "sim", "aec": aec})
            h.start("stt_node", params={**STT_MODELS, "barge_in": True}, extra_args=prof)
            h.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME},
                    extra_args=prof)
            heard = h.collect(Utterance, "/transcript")
            interrupts = h.collect(Interrupt, "/interrupt")
            speaking = h.collect(Bool, "/speaking", latched())
            say = h.node.create_publisher(String, "/say", reliable())
            h.wait_matched(say)
            h.wait_publisher("/transcript", timeout=60)
            h.spin_for(2.0)
            spoken, c0, t0 = 0.0, cpu_s(node.proc.pid), time.monotonic()
            for _ in range(4):
                n = len(speaking)
                say.publish(String(data=AEC_TEXT))
                h.wait_for(lambda: any(m.data for m in speaking[n:]), 60, "speaking")
                start = time.monotonic()
                h.wait_for(lambda: not speaking[-1].data, 60, "done speaking")
                spoken += time.monotonic() - start
                h.spin_for(1.0)
            cpu = (cpu_s(node.proc.pid) - c0) / (time.monotonic() - t0)
            # capture -> delivery: frames with their arrival time (the stamp is
            # the first sample's capture time; a 20 ms frame is complete 20 ms later)
            recv = []
            h.node.create_subscription(AudioFrame, "/audio", lambda f: recv.append((time.time(), f)), reliable(500))
            h.spin_for(3.0)
            lat = [(t - (f.header.stamp.sec + f.header.stamp.nanosec * 1e-9)) * 1e3 - 20.0 for t, f in recv]
            print(f"  AEC {'on ' if aec else 'off'}: robot spoke {spoken:.0f} s: transcripts {len(heard)}, "
                  f"interrupts {len(interrupts)} -> false turns per minute of robot speech "
                  f"{60 * (len(heard) + len(interrupts)) / max(spoken, 1):.1f}; audio_node CPU {100 * cpu:.1f} % of one core; "
                  f"last sample captured -> frame received: median {med(lat):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms")
        finally:
            h.close()

    h = harness("audio-barge-in")
    try:
        h.start("audio_node", params={"backend": "sim"})
        h.start("stt_node", params={**STT_MODELS, "barge_in": True}, extra_args=prof)
        h.start("tts_node", params={"voice_path": PIPER_VOICE, "onnxruntime_path": ONNXRUNTIME}, extra_args=prof)
        h.start("llm_node", params={"model_path": LLM_MODEL, "max_tokens": 80}, extra_args=prof)
        interrupts = h.collect(Interrupt, "/interrupt")
        speaking = h.collect(Bool, "/speaking", latched())
        talker = h.node.create_publisher(AudioFrame, "/sim/talker", reliable(500))
        h.wait_matched(talker)
        h.wait_publisher("/transcript", timeout=60)
        story = read_wav(speak(STORY, OUT / "story.wav"))[0][:, 0]
        over = [read_wav(speak(t, OUT / f"over{i}.wav"))[0][:, 0] for i, t in enumerate(
            ["Wait, stop.", "What time is it?", "No, go to the kitchen instead."])]

        def talk(x):
            pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
            for i in range(0, len(pcm), 8000):
                talker.publish(AudioFrame(sample_rate=16000, channels=1, encoding="S16LE",
                                          data=pcm[i:i + 8000].tobytes()))
                h.spin_for(0.05)

        to_interrupt, to_silent = [], []
        for k in range(6):
            n = len(speaking)
            talk(story)
            h.wait_for(lambda: any(m.data for m in speaking[n:]), 90, "speaking")
            h.spin_for(1.5)
            x = over[k % len(over)]
            onset = float(np.flatnonzero(np.abs(x) > 0.02)[0]) / 16000
            m, sent = len(interrupts), time.monotonic()
            talk(x)
            h.wait_for(lambda: len(interrupts) > m, 10, "interrupt")
            to_interrupt.append((time.monotonic() - sent - onset) * 1e3)
            h.wait_for(lambda: not speaking[-1].data, 10, "silent")
            to_silent.append((time.monotonic() - sent - onset) * 1e3)
            h.spin_for(6.0)  # the answer to the words spoken over the robot
            h.wait_for(lambda: not speaking[-1].data, 60, "quiet")
        print(f"  barge-in, user speech onset -> interrupt received: median {med(to_interrupt):.0f} ms "
              f"(max {max(to_interrupt):.0f}); -> tts_node speaking false: median {med(to_silent):.0f} ms "
              f"over {len(to_interrupt)} interruptions (audio_node drops its playout on the interrupt)")
    finally:
        h.close()


FLEET_REQUESTS = ["What color is the sky on a clear day?", "Tell me a short story about a robot.",
                  "What is the opposite of hot?", "Name three fruits."]


def pctl(xs, q):
    return float(np.percentile(xs, q)) if xs else float("nan")


def fleet_round(h, pubs, chunks, n, rnd):
    """Request `rnd` to robots 0..n-1 at once: their first-chunk times [ms],
    and the pieces generated per second over the round."""
    from voice_agent.msg import Utterance
    text = FLEET_REQUESTS[rnd % len(FLEET_REQUESTS)]
    ids = [f"r{rnd}-n{n}-{k}-{time.monotonic_ns()}" for k in range(n)]
    t0 = time.time()
    for k, tid in enumerate(ids):
        pubs[k % len(pubs)].publish(Utterance(turn_id=tid, conversation_id=f"robot{k}", text=text))
    done = lambda: all(any(c.turn_id == t and c.is_final for c in chunks) for t in ids)  # noqa: E731
    h.wait_for(done, 300, "the fleet's replies")
    finals = [next(c for c in chunks if c.turn_id == t and c.is_final) for t in ids]
    firsts = [min((c for c in chunks if c.turn_id == t), key=lambda c: c.index) for t in ids]
    t1 = max(f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in finals)
    return [f.first_chunk_ms for f in firsts], sum(f.generated_tokens for f in finals) / max(t1 - t0, 1e-3)


def fleet(sizes=(1, 2, 4, 8), rounds=4):
    """N robots against one OpenAI-compatible server vs N conversations in
    one local llm_node (parallel N), same model and threads, side by side;
    then the failover time."""
    from va_harness import ChatServer
    from voice_agent.msg import ReplyChunk, Utterance
    print("\n== fleet: N robots (namespaced llm_nodes, engine openai) on one server vs one local llm_node "
          "(parallel N); SmolLM2-135M Q4_1, 2 threads, greedy, max_tokens 64 ==")
    common = {"temperature": 0.0, "max_tokens": 64, "use_mlock": False, "n_gpu_layers": 0}
    results = {}
    h = harness("fleet-server")
    server = ChatServer(h.log_dir).start()
    try:
        chunks = h.collect(ReplyChunk, "/fleet/reply/chunk")
        pubs = []
        for k in range(max(sizes)):
            ns = f"/robot{k}"
            h.start("llm_node", name=f"llm_robot{k}", remaps={"__ns": ns, "reply/chunk": "/fleet/reply/chunk"},
                    params={**common, "engine": "openai", "server.base_url": server.base_url,
                            "server.model": ChatServer.MODEL, "fallback": "none", "model_path": "",
                            "parallel": 1, "ctx_size": 2048, "server.timeout_s": 60.0})
            pub = h.node.create_publisher(Utterance, f"{ns}/transcript", reliable())
            h.wait_matched(pub, timeout=60)
            pubs.append(pub)
        h.wait_for(lambda: h.node.count_publishers("/fleet/reply/chunk") >= max(sizes), 60, "the robots")
        fleet_round(h, pubs, chunks, 1, 0)  # warm-up
        for n in sizes:
            runs = [fleet_round(h, pubs[:n], chunks, n, r) for r in range(rounds)]
            results[("server", n)] = ([x for f, _ in runs for x in f], med([t for _, t in runs]))
    finally:
        server.kill()
        h.close()
    h = harness("fleet-local")
    try:
        chunks, pub = start_llm(h, {**common, "model_path": LLM_MODEL, "n_threads": THREADS,
                                    "parallel": max(sizes), "ctx_size": 2048 * max(sizes)})
        fleet_round(h, [pub], chunks, 1, 0)
        for n in sizes:
            runs = [fleet_round(h, [pub], chunks, n, r) for r in range(rounds)]
            results[("local", n)] = ([x for f, _ in runs for x in f], med([t for _, t in runs]))
    finally:
        h.close()
    print("(llama-cpp-python's server answers one request at a time: the others queue, which the server's "
          "first-chunk times show; vLLM, SGLang and llama.cpp's llama-server batch them)")
    print(f"{'N':>3} | {'server: 1st chunk p50':>22}{'p95':>8}{'tok/s':>8} | {'local: 1st chunk p50':>21}{'p95':>8}"
          f"{'tok/s':>8}")
    for n in sizes:
        sf, st = results[("server", n)]
        lf, lt = results[("local", n)]
        print(f"{n:>3} | {pctl(sf, 50):>19.0f} ms{pctl(sf, 95):>8.0f}{st:>8.1f} | {pctl(lf, 50):>18.0f} ms"
              f"{pctl(lf, 95):>8.0f}{lt:>8.1f}")
    failover()


def failover(tries=3):
    """The server killed mid-reply: kill -> the cut reply's final chunk,
    and the next turn's first chunk from the local fallback."""
    from va_harness import ChatServer
    from voice_agent.msg import Utterance
    h = harness("fleet-failover")
    cuts, nexts = [], []
    try:
        server = ChatServer(h.log_dir)
        chunks, pub = None, None
        for k in range(tries):
            server.start()
            if pub is None:
                chunks, pub = start_llm(h, {"engine": "openai", "server.base_url": server.base_url,
                                            "server.model": ChatServer.MODEL, "model_path": LLM_MODEL,
                                            "n_threads": THREADS, "temperature": 0.0, "max_tokens": 200,
                                            "use_mlock": False, "n_gpu_layers": 0, "server.probe_interval_s": 0.5})
            else:
                h.wait_for(lambda: h.procs[0].log().count("answers again") >= k, 30, "the server again")
            tid = f"story{k}"
            pub.publish(Utterance(turn_id=tid, text="Tell me a long story about a robot who learns to paint."))
            h.wait_for(lambda: any(c.turn_id == tid for c in chunks), 60, "the story's first chunk")
            t_kill = time.time()
            server.kill()
            h.wait_for(lambda: any(c.turn_id == tid and c.is_final for c in chunks), 30, "the cut reply's end")
            fin = next(c for c in chunks if c.turn_id == tid and c.is_final)
            cuts.append((fin.header.stamp.sec + fin.header.stamp.nanosec * 1e-9 - t_kill) * 1e3)
            nid = f"next{k}"
            pub.publish(Utterance(turn_id=nid, text="What is the opposite of hot?"))
            h.wait_for(lambda: any(c.turn_id == nid and c.is_final for c in chunks), 60, "the fallback's reply")
            nexts.append(min((c for c in chunks if c.turn_id == nid), key=lambda c: c.index).first_chunk_ms)
    finally:
        server.kill()
        h.close()
    print(f"failover (server killed mid-reply, {tries} tries): kill -> the cut reply's final chunk median "
          f"{med(cuts):.0f} ms; the next turn's first chunk from the local fallback median {med(nexts):.0f} ms")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    which = sys.argv[1:] or ["stt", "llm", "intent", "tts", "loop", "conversation", "first_chunk", "audio"]
    print(f"machine: {os.cpu_count()} cores; binaries {BIN}")
    for w in which:
        {"stt": stt, "llm": llm, "intent": intent, "tts": tts, "loop": loop_bench,
         "conversation": conversation, "first_chunk": first_chunk, "audio": audio,
         "history": history, "turn_judge": turn_judge, "fleet": fleet}[w]()


if __name__ == "__main__":
    main()
