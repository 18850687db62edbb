"""Soak: the whole loop under replayed speech and silence at real time.

    python scripts/soak.py --minutes 30

Every cycle plays one spoken request (from a fixed set) followed by silence
while the robot answers, like a person talking to the robot now and then.
Reports per-node RSS growth after warm-up (must stay under 5 %), utterances
in against turns out (none may be lost), and node health. RSS is compared as
the peak over the first stretch after warm-up against the peak over the last
stretch of the run: synthesis and inference allocate per sentence, so a
single sample says more about the moment than about a leak. Warm-up lasts at
least two full cycles of the requests (every reply, so every sentence length,
seen twice).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from va_harness import ROOT, Harness, latched, pick_domain, publish_audio, read_wav, speak, start_nodes  # noqa: E402

REQUESTS = [
    "What color is the sky on a clear day?",
    "Please go to the kitchen and bring me a glass of water.",
    "The robot should stop near the charging station.",
    "What is the weather like today?",
]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the run before the RSS baseline")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "soak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from rclpy.qos import qos_profile_sensor_data
    from std_msgs.msg import Bool
    from voice_agent.msg import AudioFrame, TurnStats, Utterance

    wavs = [read_wav(speak(t, args.out / f"r{i}.wav"))[0][:, 0] for i, t in enumerate(REQUESTS)]
    h = Harness(pick_domain(), args.out)
    nodes = start_nodes(h)
    heard = h.collect(Utterance, "/transcript")
    stats = h.collect(TurnStats, "/turn_stats")
    speaking = h.collect(Bool, "/speaking", latched())
    mic = h.node.create_publisher(AudioFrame, "/audio", qos_profile_sensor_data)
    try:
        h.wait_matched(mic, timeout=60)
        h.wait_publisher("/turn_stats", timeout=60)
        publish_audio(h, mic, np.zeros(16000, np.float32), 16000)
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        warmed_at = None
        sent = 0
        samples = []
        while time.monotonic() < end:
            x = wavs[sent % len(wavs)]
            publish_audio(h, mic, np.concatenate([np.zeros(4800, np.float32), x, np.zeros(4800, np.float32)]), 16000)
            sent += 1
            t_req = time.monotonic()
            # silence until the answer is spoken (or 60 s), then a pause
            while time.monotonic() - t_req < 60 and not (len(stats) >= sent and speaking and not speaking[-1].data):
                publish_audio(h, mic, np.zeros(1600, np.float32), 16000)
            publish_audio(h, mic, np.zeros(16000 * 2, np.float32), 16000)
            rss = {n: rss_mb(p.proc.pid) for n, p in nodes.items()}
            elapsed = time.monotonic() - t0
            samples.append((elapsed, rss))
            # warm once every request was answered once (its allocations made)
            if warmed_at is None and elapsed >= args.warmup * args.minutes * 60 and sent >= len(REQUESTS):
                warmed_at = len(samples)
            if not all(p.alive() for p in nodes.values()):
                print("a node died:", {n: p.proc.returncode for n, p in nodes.items()})
                return 1
            print(f"{elapsed:7.0f} s  requests {sent}  transcripts {len(heard)}  turns {len(stats)}  "
                  + "  ".join(f"{n} {v:.0f} MB" for n, v in rss.items()), flush=True)
        # compare windows of at least one full request cycle each, so both hold
        # the same replies (and the same per-sentence allocation peaks)
        cycle = len(REQUESTS)
        if warmed_at is None or len(samples) - warmed_at < 2 * cycle:
            print("run too short for the RSS comparison: raise --minutes")
            return 1
        after = samples[warmed_at:]
        span = max(cycle, len(after) // 4)
        peak = lambda xs, n: max(x[1][n] for x in xs)  # noqa: E731
        growth = {n: (peak(after[-span:], n) - peak(after[:span], n)) / peak(after[:span], n) * 100 for n in nodes}
        lost = sent - len(stats)
        print(f"\nsoak {args.minutes:.0f} min: {sent} utterances in, {len(heard)} transcripts, {len(stats)} turns out "
              f"({lost} lost)")
        print("RSS growth after warm-up: " + ", ".join(f"{n} {g:+.1f} %" for n, g in growth.items()))
        ok = lost == 0 and all(g < 5.0 for g in growth.values())
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        h.close()


if __name__ == "__main__":
    sys.exit(main())
