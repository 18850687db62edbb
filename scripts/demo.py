"""The voice loop on the embedded default models, as a user meets it.

Starts stt_node, llm_node and tts_node with a config profile, plays spoken
requests into `audio` at real-time pace the way a microphone would (20 ms
frames, silence between requests), and prints for each turn what was heard,
what was answered and the latency breakdown from `turn_stats`. The spoken
replies are written as WAV files.

    python scripts/demo.py                      # three built-in requests
    python scripts/demo.py --wav my_question.wav  # your own recording(s)
    python scripts/demo.py --places             # intents: spoken goals to a Nav2 stand-in

With --places, llm_node sends each spoken goal as a NavigateToPose action goal
(nav_mode action, the default) to a Nav2 stand-in that drives there in a few
seconds: the demo shows the goal, the stand-in's result and the sentence the
robot says when it arrives.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from va_harness import (ROOT, Harness, latched, pick_domain, publish_audio, read_wav, reliable, speak,  # noqa: E402
                        start_nodes, write_wav)

REQUESTS = [
    "What color is the sky on a clear day?",
    "Please tell me a short story about a robot.",
    "Please go to the kitchen and bring me a glass of water.",
]
PLACES_REQUESTS = [
    "Go to the kitchen.",
    "Stop!",
    "How much battery do you have left?",
]
# how long the Nav2 stand-in takes to reach a goal [s]
DRIVE_S = 4.0
MIC_RATE = 16000


def stage_table(stats) -> str:
    rows = [
        ("end of speech -> transcript (VAD hangover + Whisper)", "stt_ms"),
        ("  of which Whisper compute", "stt_compute_ms"),
        ("transcript -> first LLM token", "llm_first_token_ms"),
        ("transcript -> first reply chunk", "llm_first_chunk_ms"),
        ("first chunk -> first audio (TTS)", "tts_first_audio_ms"),
        ("END OF SPEECH -> FIRST AUDIO OUT", "end_of_speech_to_first_audio_ms"),
    ]
    return "\n".join(f"    {label:<52} {getattr(stats, key):8.0f} ms" for label, key in rows)


def show_nav_events(record: Path, seen: list) -> None:
    """Prints what the Nav2 stand-in recorded since the last call."""
    import json
    if not record.exists():
        return
    lines = record.read_text().splitlines()
    for line in lines[len(seen):]:
        e = json.loads(line)
        seen.append(e)
        if e["event"] == "goal":
            print(f"    Nav2:     goal received ({e['x']:.2f}, {e['y']:.2f}) via {e['via']}")
        elif e["event"] in ("arrived", "cancelled", "preempted", "stop"):
            print(f"    Nav2:     {e['event']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wav", nargs="*", type=Path, default=[], help="your own spoken request(s), any rate, mono or stereo")
    ap.add_argument("--profile", default="cpu_small", help="config/PROFILE.yaml")
    ap.add_argument("--tts-engine", default="piper", choices=["piper", "espeak"])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="where WAVs are written")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds allowed per turn")
    ap.add_argument("--places", nargs="?", type=Path, const=ROOT / "config" / "places" / "example.yaml",
                    help="turn on intents with this places file (default: the example) and start the "
                         "Nav2 stand-in (goals, pose, battery at 42%%)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.wav:
        requests = [(str(w), w) for w in args.wav]
    else:
        texts = PLACES_REQUESTS if args.places else REQUESTS
        requests = [(t, speak(t, args.out / f"request{i + 1}.wav", rate=MIC_RATE)) for i, t in enumerate(texts)]

    domain = pick_domain(from_env=True)
    h = Harness(domain, args.out)
    from std_msgs.msg import Bool, String
    from voice_agent.msg import AudioFrame, Intent, ReplyChunk, TurnStats, Utterance

    print(f"starting stt_node, llm_node, tts_node (profile {args.profile}, ROS_DOMAIN_ID {domain})", flush=True)
    llm = {}
    goals_file = args.out / "nav2_received.jsonl"
    if args.places:
        goals_file.unlink(missing_ok=True)
        h.start(str(ROOT / "scripts" / "nav2_standin.py"), name="nav2_standin",
                params={"battery": 0.42, "record": goals_file, "drive_s": DRIVE_S})
        llm.update(places_file=args.places.resolve(), battery_topic="battery_state", pose_topic="amcl_pose")
        print(f"intents on: places {args.places}; Nav2 stand-in records goals in {goals_file}", flush=True)
    start_nodes(h, args.profile, llm=llm, tts={"engine": args.tts_engine})
    heard = h.collect(Utterance, "/transcript")
    chunks = h.collect(ReplyChunk, "/reply/chunk")
    stats = h.collect(TurnStats, "/turn_stats")
    intents = h.collect(Intent, "/intent")
    audio_out = h.collect(AudioFrame, "/audio_out", reliable(500))
    speaking = h.collect(Bool, "/speaking", latched())
    said = h.collect(String, "/say")  # what llm_node says of a goal's outcome
    nav_events = []  # the stand-in's record, read as it grows
    from rclpy.qos import qos_profile_sensor_data
    mic = h.node.create_publisher(AudioFrame, "/audio", qos_profile_sensor_data)
    try:
        h.wait_matched(mic, timeout=60)
        for topic in ("/transcript", "/reply/chunk", "/audio_out", "/turn_stats"):
            h.wait_publisher(topic, timeout=60)
        # the microphone runs before anyone speaks: give discovery time to settle
        publish_audio(h, mic, np.zeros(MIC_RATE, np.float32), MIC_RATE)
        results = []
        for i, (label, wav) in enumerate(requests):
            x, rate = read_wav(wav)
            x = x[:, 0] if x.shape[1] == 1 else x
            n_stats = len(stats)
            t_req = time.monotonic()
            print(f"\n[{i + 1}/{len(requests)}] playing {label!r} into /audio ...", flush=True)
            pad = np.zeros((int(0.3 * rate),) + x.shape[1:], np.float32)
            publish_audio(h, mic, np.concatenate([pad, x, pad]), rate)
            # the microphone keeps running (silence) until the robot has answered
            quiet = np.zeros((int(0.1 * rate),) + x.shape[1:], np.float32)
            while time.monotonic() - t_req < args.timeout:
                publish_audio(h, mic, quiet, rate)
                done = len(stats) > n_stats and speaking and not speaking[-1].data
                if done:
                    break
            else:
                print("    no complete turn within the timeout (see the node logs in " f"{args.out})")
                continue
            s = stats[n_stats]
            turn = s.turn_id
            text = next((u.text for u in heard if u.turn_id == turn), "?")
            h.wait_for(lambda: any(c.turn_id == turn and c.is_final for c in chunks), 10, "final chunk")
            reply = "".join(c.text for c in sorted((c for c in chunks if c.turn_id == turn), key=lambda c: c.index))
            frames = [f for f in audio_out if f.turn_id == turn]
            pcm = np.concatenate([np.frombuffer(bytes(f.data), "<i2") for f in frames]).astype(np.float32) / 32768
            out_wav = args.out / f"reply{i + 1}.wav"
            write_wav(out_wav, pcm, frames[0].sample_rate)
            print(f"    heard:    {text!r}")
            print(f"    answered: {reply.strip()!r}")
            sent_goal = False
            for it in (it for it in intents if it.turn_id == turn):
                if it.goal_sent:
                    sent_goal = True
                    p = it.goal.pose.position
                    print(f"    action:   {it.action} {it.place!r} -> NavigateToPose goal ({p.x:.2f}, {p.y:.2f}) "
                          f"in {it.goal.header.frame_id}")
                else:
                    print(f"    action:   {it.action}{' ' + repr(it.place) if it.place else ''} (no goal sent)")
            print(stage_table(s))
            print(f"    LLM {s.tokens_per_s:.0f} tok/s, {s.prompt_tokens} prompt tokens evaluated; "
                  f"spoken reply: {out_wav} ({len(pcm) / frames[0].sample_rate:.1f} s)")
            results.append(s)
            if args.places:
                if sent_goal:
                    # the robot drives; when Nav2's result comes, it says so
                    n_said = len(said)
                    h.wait_for(lambda: len(said) > n_said, DRIVE_S + 30, "the goal's outcome said")
                    h.wait_for(lambda: speaking and speaking[-1].data, 30, "the outcome spoken")
                    h.wait_for(lambda: not speaking[-1].data, 60, "the outcome spoken to its end")
                    print(f"    then:     Nav2's result came; the robot said {said[-1].data!r}")
                show_nav_events(goals_file, nav_events)
        if results:
            e2e = [s.end_of_speech_to_first_audio_ms for s in results]
            print(f"\n{len(results)}/{len(requests)} turns; end of speech -> first audio out: "
                  f"median {statistics.median(e2e):.0f} ms, max {max(e2e):.0f} ms")
        return 0 if len(results) == len(requests) else 1
    finally:
        codes = h.close()
        bad = {k: v for k, v in codes.items() if v not in (0, None)}
        if bad:
            print(f"node exit codes: {bad}")


if __name__ == "__main__":
    sys.exit(main())
