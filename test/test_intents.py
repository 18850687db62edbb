"""Spoken requests become Nav2 goals: llm_node's intent layer (places file +
grammar-constrained actions) through real topics and Nav2's NavigateToPose
action, with scripts/nav2_standin.py as a separate process standing in for
Nav2 (an rclpy action server that succeeds, aborts, is cancelled and
preempted; it records every goal, stop and outcome) and the embedded
SmolLM2-135M model. nav2_msgs is the test-only copy in test/interfaces.

The requests used here are ones the 135M model maps right with greedy
decoding; it gets others wrong (see README, intents). What cannot happen,
whatever it writes, is an invalid action (tested against the grammar with the
real engine in llm_node's sampling tests) or a goal to a place not in the file.
"""
import json
import math

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Empty, String
from voice_agent.msg import Intent, ReplyChunk, Utterance

from va_harness import LLM_MODEL, ROOT, reliable, wer
from va_harness import Microphone, start_loop, utterance

PLACES = ROOT / "config" / "places" / "example.yaml"
STANDIN = ROOT / "scripts" / "nav2_standin.py"
LLM = {"model_path": LLM_MODEL, "n_threads": 2, "ctx_size": 4096, "parallel": 2, "temperature": 0.0,
       "use_mlock": False, "max_tokens": 64, "places_file": PLACES}


class Nav2:
    """The stand-in process and what it recorded."""

    def __init__(self, ros, **params):
        self.path = ros.log_dir / "nav2_received.jsonl"
        self.proc = ros.start(str(STANDIN), name="nav2_standin",
                              params={"record": self.path, "drive_s": 0.5, **params})
        ros.wait_publisher("/amcl_pose", timeout=30)

    def events(self, kind=None):
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["event"] == kind]


def start(ros, prompt=True, **params):
    p = {k: v for k, v in {**LLM, **params}.items() if v is not None}
    node = ros.start("llm_node", params=p)
    t = {
        "intents": ros.collect(Intent, "/intent"),
        "replies": ros.collect(String, "/reply/text"),
        "chunks": ros.collect(ReplyChunk, "/reply/chunk"),
        "said": ros.collect(String, "/say"),
        "diags": ros.collect(DiagnosticArray, "/diagnostics"),
    }
    pub = ros.node.create_publisher(String if prompt else Utterance, "/prompt" if prompt else "/transcript",
                                    reliable())
    ros.wait_matched(pub, timeout=30)
    ros.wait_publisher("/reply/text", timeout=30)
    return node, pub, t


def robot_state(t) -> str:
    """llm_node's newest robot-state lines (what the next prompt is told)."""
    for d in reversed(t["diags"]):
        for st in d.status:
            if st.name.endswith("llm_node"):
                return {v.key: v.value for v in st.values}.get("robot_state", "")
    return ""


def test_go_to_the_kitchen_is_a_navigate_to_pose_goal_and_the_arrival_is_spoken(ros):
    nav = Nav2(ros)
    node, pub, t = start(ros)
    pub.publish(String(data="Go to the kitchen."))
    ros.wait_for(lambda: nav.events("goal"), 60, "goal at the Nav2 stand-in", [node, nav.proc])
    g = nav.events("goal")[0]
    assert g["via"] == "action"
    # config/places/example.yaml: kitchen at (4.2, -1.5), yaw 1.57 in map
    assert g["frame_id"] == "map"
    assert (g["x"], g["y"]) == (4.2, -1.5)
    assert math.isclose(2 * math.atan2(g["qz"], g["qw"]), 1.57, abs_tol=1e-6)
    assert g["stamp"] > 0
    ros.wait_for(lambda: t["intents"] and t["replies"], 10, "intent and reply")
    i = t["intents"][0]
    assert (i.action, i.place, i.goal_sent) == (Intent.NAVIGATE_TO, "kitchen", True), i
    assert i.request == "Go to the kitchen." and json.loads(i.raw_output)["place"] == "kitchen"
    assert i.goal.pose.position.x == 4.2 and i.goal.header.frame_id == "map"
    # the robot confirms in words; no JSON reaches speech
    assert t["replies"][0].data == "Going to the kitchen."
    ros.wait_for(lambda: any(c.is_final for c in t["chunks"]), 5, "final chunk")
    assert "".join(c.text for c in t["chunks"]) == "Going to the kitchen."
    # the stand-in "arrives": the result comes back and the robot says so
    ros.wait_for(lambda: t["said"], 10, "spoken arrival", [node, nav.proc])
    assert [m.data for m in t["said"]] == ["I'm at the kitchen."]
    assert nav.events("arrived") and len(nav.events("goal")) == 1
    ros.wait_for(lambda: "Navigation: arrived at the kitchen." in robot_state(t), 5, "state")


def test_an_aborted_goal_is_spoken_with_nav2s_reason(ros):
    nav = Nav2(ros, outcome="abort", error_code=9000, error_msg="No valid path to the goal")
    node, pub, t = start(ros)
    pub.publish(String(data="Go to the kitchen."))
    ros.wait_for(lambda: t["said"], 60, "spoken outcome", [node, nav.proc])
    assert [m.data for m in t["said"]] == ["I couldn't reach the kitchen: No valid path to the goal."]
    assert nav.events("aborted") and not nav.events("arrived")
    assert t["replies"][0].data == "Going to the kitchen."
    ros.wait_for(lambda: "could not reach the kitchen (No valid path to the goal)" in robot_state(t), 5,
                 "state")


def test_no_navigation_server_is_said_not_hidden(ros):
    node, pub, t = start(ros, nav_action="/no_nav2_here/navigate_to_pose")
    pub.publish(String(data="Go to the kitchen."))
    ros.wait_for(lambda: t["said"], 60, "spoken outcome", [node])
    assert t["said"][0].data == "I couldn't reach the kitchen: navigation is not running."
    assert t["intents"][0].goal_sent  # sent to the client; the server was missing


def test_stop_while_driving_cancels_the_goal_and_feedback_reaches_the_prompt(ros):
    nav = Nav2(ros, drive_s=60.0)
    node, pub, t = start(ros)
    pub.publish(String(data="Go to the kitchen."))
    # from (0, 0) to the kitchen (4.2, -1.5): 4.5 m, counting down over 60 s
    ros.wait_for(lambda: "Navigation: driving to the kitchen, 4 m to go, about" in robot_state(t), 60,
                 "feedback in the robot state", [node, nav.proc])
    ros.wait_for(lambda: len(t["replies"]) == 1, 10, "confirmation")
    pub.publish(String(data="Stop!"))
    ros.wait_for(lambda: nav.events("cancelled"), 60, "goal cancelled at the stand-in", [node, nav.proc])
    ros.wait_for(lambda: len(t["replies"]) == 2, 10, "reply to stop")
    assert t["replies"][1].data == "Stopping." and t["intents"][1].action == Intent.STOP
    ros.wait_for(lambda: "Navigation: stopped on the way to the kitchen." in robot_state(t), 5, "state")
    ros.spin_for(1.0)
    assert t["said"] == []  # a goal the user stopped is not announced
    assert nav.events("stop") == []  # the action is cancelled, no topic message


def test_a_second_goal_replaces_the_first(ros):
    nav = Nav2(ros, drive_s=8.0)
    # two people (conversations): the robot has one goal at a time. (Separate
    # histories also keep the 135M model from answering the second request
    # with the pattern of the first.)
    node, pub, t = start(ros, prompt=False)
    pub.publish(Utterance(turn_id="g1", conversation_id="alice", text="Go to the kitchen."))
    ros.wait_for(lambda: nav.events("goal"), 60, "first goal", [node, nav.proc])
    pub.publish(Utterance(turn_id="g2", conversation_id="bob", text="Navigate to the lab please."))
    ros.wait_for(lambda: len(nav.events("goal")) == 2, 60, "second goal", [node, nav.proc])
    assert nav.events("goal")[1]["x"] != nav.events("goal")[0]["x"]
    ros.wait_for(lambda: t["said"], 30, "spoken arrival", [node, nav.proc])
    ros.spin_for(1.0)
    # Nav2 preempted (aborted) the first goal; only the second one's outcome is said
    assert [e["goal"] for e in nav.events("preempted")] == [1]
    assert [m.data for m in t["said"]] == ["I'm at the lab."]


def test_unknown_place_asks_back_and_sends_no_goal(ros):
    nav = Nav2(ros)
    node, pub, t = start(ros)
    pub.publish(String(data="go to the garage"))
    ros.wait_for(lambda: t["intents"] and t["replies"], 60, "intent", [node])
    i = t["intents"][0]
    assert i.action == Intent.NAVIGATE_TO and not i.goal_sent, i
    assert "garage" in i.place
    reply = t["replies"][0].data
    assert reply.startswith("I don't know a place called") and "kitchen" in reply, reply
    # the goal would have been published before the intent: give it time anyway
    ros.spin_for(1.0)
    assert nav.events("goal") == []


def test_topic_mode_sends_goal_pose(ros):
    nav = Nav2(ros)
    node, pub, t = start(ros, nav_mode="topic")
    pub.publish(String(data="Go to the kitchen."))
    ros.wait_for(lambda: nav.events("goal"), 60, "goal on goal_pose", [node, nav.proc])
    assert nav.events("goal")[0]["via"] == "topic" and nav.events("goal")[0]["x"] == 4.2
    ros.wait_for(lambda: "Last navigation goal: the kitchen." in robot_state(t), 5, "state")
    ros.wait_for(lambda: nav.events("arrived"), 10, "arrival")
    ros.spin_for(0.5)
    assert t["said"] == []  # a topic goal's outcome is not known


def test_topic_mode_stop_goes_out_on_the_configured_stop_topic(ros):
    nav = Nav2(ros)
    # a robot whose base listens elsewhere: both sides configured to /base/stop
    node, pub, t = start(ros, nav_mode="topic", stop_topic="/base/stop")
    nav2_b = ros.start(str(STANDIN), name="nav2_standin_base", params={"battery": -1.0},
                       remaps={"stop": "/base/stop", "goal_pose": "/unused_goal", "amcl_pose": "/unused_pose",
                               "navigate_to_pose": "/unused_nav"})
    stops = ros.collect(Empty, "/base/stop")
    ros.wait_for(lambda: ros.node.count_subscribers("/base/stop") >= 2, 30, "stop subscribers", [nav2_b])
    pub.publish(String(data="Stop!"))
    ros.wait_for(lambda: stops and t["intents"], 60, "stop", [node])
    assert t["intents"][0].action == Intent.STOP
    ros.wait_for(lambda: t["replies"], 5, "reply")
    assert t["replies"][0].data == "Stopping."
    assert nav.events("stop") == []  # nothing on the default stop topic


def test_answers_are_spoken_text_streamed_out_of_the_json(ros):
    node, pub, t = start(ros)
    pub.publish(String(data="What color is the sky?"))
    ros.wait_for(lambda: t["intents"] and t["replies"], 60, "answer", [node])
    i = t["intents"][0]
    assert i.action == Intent.ANSWER and not i.goal_sent
    reply = t["replies"][0].data
    assert "blue" in reply.lower() and "{" not in reply and '"' not in reply, reply
    # the small model may run to max_tokens here: an answer cut short is still an answer
    assert i.raw_output.startswith('{"action":"answer","say":"' + reply), i.raw_output
    ros.wait_for(lambda: any(c.is_final for c in t["chunks"]), 5, "final chunk")
    assert "".join(c.text for c in t["chunks"]) == reply


def test_battery_and_pose_reach_the_prompt(ros):
    """The robot answers from its state: BatteryState and an AMCL-style pose
    from the stand-in, shown in /diagnostics and used in the answer."""
    from diagnostic_msgs.msg import DiagnosticArray
    nav = Nav2(ros, battery=0.42)
    # the stand-in "arrives" at (1, 2) before llm_node starts: the latched
    # pose must still reach it, as amcl_pose does
    goal = ros.node.create_publisher(PoseStamped, "/goal_pose", reliable())
    ros.wait_matched(goal)
    g = PoseStamped()
    g.header.frame_id = "map"
    g.pose.position.x, g.pose.position.y, g.pose.orientation.w = 1.0, 2.0, 1.0
    goal.publish(g)
    ros.wait_for(lambda: nav.events("arrived"), 10, "arrival", [nav.proc])
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    node, pub, t = start(ros, prompt=False, places_file=None, battery_topic="battery_state",
                         pose_topic="amcl_pose")

    def state():
        vals = [kv.value for d in diags for s in d.status for kv in s.values if kv.key == "robot_state"]
        return vals[-1] if vals else ""

    ros.wait_for(lambda: "Battery: 42 percent" in state() and "Position: x 1.0 m, y 2.0 m in the map frame"
                 in state(), 20, "battery and pose in the robot state", [node])
    pub.publish(Utterance(turn_id="b1", conversation_id="b", text="What is your battery level?"))
    ros.wait_for(lambda: t["replies"], 60, "reply", [node])
    assert "42" in t["replies"][0].data, t["replies"][0].data


def test_spoken_go_to_the_kitchen_through_the_whole_loop(ros, tmp_path):
    """Microphone audio -> stt_node -> llm_node (intents) -> goal at the Nav2
    stand-in, and tts_node speaks the confirmation."""
    nav = Nav2(ros)
    mic_pub, t = start_loop(ros, llm={"places_file": PLACES})
    intents = ros.collect(Intent, "/intent")
    mic = Microphone(ros, mic_pub)
    mic.say(utterance(tmp_path, "Go to the kitchen.", "kitchen"))
    mic.run(lambda: nav.events("goal") and t["stats"], 120, "goal and spoken confirmation")
    assert nav.events("goal")[0]["x"] == 4.2
    assert wer("Go to the kitchen.", t["heard"][0].text) == 0, t["heard"][0].text
    assert intents[0].goal_sent and intents[0].place == "kitchen"
    assert t["replies"][0].data == "Going to the kitchen."
    s = t["stats"][0]
    assert s.turn_id == t["heard"][0].turn_id and s.end_of_speech_to_first_audio_ms > 0

