"""Evaluation: replay bags (or WAVs with reference transcripts) through the
running pipeline and report, per turn, the transcript against the reference
(word error rate), the reply and the latency breakdown; p50/p95 per stage.
Writes report.json, report.md and latency.png.

    python scripts/evaluate.py --bags out/bags/b1 out/bags/b2 [--rate 2 --sim-time]
    python scripts/evaluate.py --wavs q1.wav q2.wav --refs "first question" "second question"

Replayed audio holds no echo of the robot, so stt_node's half-duplex gate is
left unplugged here (the robot may still be speaking when the next recorded
utterance starts). llm_node answers every request on its own
(busy_policy queue) and tts_node speaks every reply in full (drop_superseded
false), so each reference utterance gets its own row even when the machine is
slower than the replay.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bag as bagtool  # noqa: E402
from va_harness import ROOT, Harness, pick_domain, start_nodes, wer  # noqa: E402

STAGES = [("stt_ms", "speech end -> transcript"), ("llm_first_chunk_ms", "transcript -> first chunk"),
          ("tts_first_audio_ms", "first chunk -> first audio"), ("end_of_speech_to_first_audio_ms", "end to end")]


def pct(xs, q):
    return float(np.percentile(xs, q)) if xs else float("nan")


def run(bags: list[Path], out: Path, rate: float, sim_time: bool, timeout: float) -> dict:
    from rclpy.qos import qos_profile_sensor_data
    from voice_agent.msg import AudioFrame, ReplyChunk, TurnStats, Utterance
    refs = []
    for b in bags:
        list(bagtool.read_audio(b))  # fail early and clearly on a bad bag
        refs.append(bagtool.references(b))
    h = Harness(pick_domain(), out)
    try:
        # busy_policy queue: every recorded request gets its own reply and
        # figures (merge, the default, would answer a request transcribed
        # while the one before is still unanswered together with it: right
        # for a person talking on, but then that request has no row here)
        start_nodes(h, common={"use_sim_time": sim_time}, stt_remaps={"speaking": "/evaluation/gate_unplugged"},
                    llm={"busy_policy": "queue"},
                    # and spoken: a reply finished while the one before is
                    # still being said would otherwise drop that one's rest
                    # (right for a person talking on, not for a recording
                    # replayed faster than this machine answers)
                    tts={"drop_superseded": False})
        heard = h.collect(Utterance, "/transcript")
        chunks = h.collect(ReplyChunk, "/reply/chunk")
        stats = h.collect(TurnStats, "/turn_stats")
        mic = h.node.create_publisher(AudioFrame, "/audio", qos_profile_sensor_data)
        h.wait_matched(mic, timeout=60)
        h.wait_publisher("/turn_stats", timeout=60)
        turns = []
        for b, r in zip(bags, refs):
            n0 = len(heard)
            print(f"replaying {b} ({len(r)} reference utterances) at {rate}x", flush=True)
            bagtool.play(h, b, rate=rate, clock=sim_time, pub=mic)
            expected = n0 + len(r)
            end = time.monotonic() + timeout
            # every transcript answered and spoken (or the time is up)
            while time.monotonic() < end:
                done_ids = {s.turn_id for s in stats}
                if len(heard) >= expected and all(u.turn_id in done_ids for u in heard[n0:]):
                    break
                h.spin_for(0.1)
            for k, u in enumerate(heard[n0:]):
                s = next((s for s in stats if s.turn_id == u.turn_id), None)
                reply = "".join(c.text for c in sorted((c for c in chunks if c.turn_id == u.turn_id), key=lambda c: c.index))
                ref = r[k] if k < len(r) else None
                turns.append({
                    "bag": str(b), "index": k, "turn_id": u.turn_id, "reference": ref, "transcript": u.text,
                    "wer": wer(ref, u.text) if ref is not None else None, "reply": reply,
                    "stt_compute_ms": u.stt_compute_ms,
                    **({key: getattr(s, key) for key, _ in STAGES} if s else {}),
                    "llm_first_token_ms": s.llm_first_token_ms if s else None,
                    "tokens_per_s": s.tokens_per_s if s else None,
                })
            if len(heard) - n0 != len(r):
                print(f"  {b}: {len(heard) - n0} turns for {len(r)} reference utterances", flush=True)
    finally:
        h.close()
    summary = {key: {"p50": pct([t[key] for t in turns if key in t], 50), "p95": pct([t[key] for t in turns if key in t], 95)}
               for key, _ in STAGES}
    wers = [t["wer"] for t in turns if t["wer"] is not None]
    n_refs = sum(len(r) for r in refs)
    return {"bags": [str(b) for b in bags], "rate": rate, "sim_time": sim_time, "references": n_refs,
            "turns": turns, "mean_wer": float(np.mean(wers)) if wers else None, "stages": summary}


def write_reports(rep: dict, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    lines = [f"# voice_agent evaluation ({len(rep['turns'])} turns for {rep['references']} reference utterances, "
             f"{rep['rate']}x, sim time {rep['sim_time']})", "",
             f"mean word error rate: {rep['mean_wer']:.3f}" if rep["mean_wer"] is not None else "no references", "",
             "| # | reference | transcript | WER | reply | stt ms | llm 1st chunk ms | tts 1st audio ms | e2e ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(rep["turns"]):
        cell = lambda v: f"{v:.0f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        lines.append(f"| {i + 1} | {t['reference'] or ''} | {t['transcript']} | "
                     f"{t['wer']:.2f} | {t['reply'].strip()[:80]} | {cell(t.get('stt_ms'))} | "
                     f"{cell(t.get('llm_first_chunk_ms'))} | {cell(t.get('tts_first_audio_ms'))} | "
                     f"{cell(t.get('end_of_speech_to_first_audio_ms'))} |" if t["wer"] is not None else
                     f"| {i + 1} | | {t['transcript']} | - | {t['reply'].strip()[:80]} | | | | |")
    lines += ["", "| stage | p50 ms | p95 ms |", "|---|---|---|"]
    for key, label in STAGES:
        s = rep["stages"][key]
        lines.append(f"| {label} | {s['p50']:.0f} | {s['p95']:.0f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    turns = [t for t in rep["turns"] if "stt_ms" in t]
    fig, ax = plt.subplots(figsize=(max(6, len(turns) * 0.8), 4))
    x = np.arange(len(turns))
    bottom = np.zeros(len(turns))
    for key, label in STAGES[:3]:
        v = np.array([t[key] for t in turns])
        ax.bar(x, v, bottom=bottom, label=label)
        bottom += v
    ax.plot(x, [t["end_of_speech_to_first_audio_ms"] for t in turns], "k_", markersize=20, label="end to end")
    ax.set_xticks(x, [str(i + 1) for i in x])
    ax.set_xlabel("turn")
    ax.set_ylabel("ms")
    ax.set_title("end of speech -> first audio out, by stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bags", type=Path, nargs="*", default=[])
    ap.add_argument("--wavs", type=Path, nargs="*", default=[])
    ap.add_argument("--refs", nargs="*", default=[], help="reference transcript per WAV")
    ap.add_argument("--rate", type=float, default=1.0, help="replay speed")
    ap.add_argument("--sim-time", action="store_true", help="publish /clock; nodes use_sim_time")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "evaluation")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per bag after its audio ends")
    args = ap.parse_args()
    bags = list(args.bags)
    try:
        if args.wavs:
            if len(args.refs) != len(args.wavs):
                print("error: --refs needs one reference per --wavs file", file=sys.stderr)
                return 2
            bags.append(bagtool.make(args.out / "wavs_bag", args.wavs, args.refs))
        if not bags:
            print("error: give --bags or --wavs", file=sys.stderr)
            return 2
        rep = run(bags, args.out, args.rate, args.sim_time, args.timeout)
    except bagtool.BagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_reports(rep, args.out)
    print((args.out / "report.md").read_text())
    print(f"written: {args.out / 'report.json'}, {args.out / 'report.md'}, {args.out / 'latency.png'}")
    return 0 if len(rep["turns"]) == rep["references"] else 1


if __name__ == "__main__":
    sys.exit(main())
