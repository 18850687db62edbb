#!/usr/bin/env python3
"""A stand-in for Nav2 (and a robot base) for tests and demos without a robot.

It serves what llm_node's intent layer talks to:
- the `navigate_to_pose` action (nav2_msgs/action/NavigateToPose), as Nav2's
  bt_navigator does: a goal is accepted, "driven" for drive_s seconds with
  feedback (distance remaining, time left) ten times a second, then succeeds
  or aborts (`outcome`); a cancel request cancels it; a new goal preempts the
  running one, which is aborted, as Nav2 does;
- goals on `goal_pose` (geometry_msgs/PoseStamped, nav_mode topic) and stops
  on `stop` (std_msgs/Empty);
- on arrival the goal becomes the robot's pose on `amcl_pose`
  (PoseWithCovarianceStamped, latched, like AMCL);
- a sensor_msgs/BatteryState on `battery_state` once a second.

Every goal, cancel, preemption and outcome is printed as one JSON line on
stdout and, with the `record` parameter set, appended to that file, so a test
can check what "Nav2" got. Settings are ROS parameters:

  python scripts/nav2_standin.py --ros-args -p battery:=0.42 -p record:=/tmp/nav.jsonl

  battery (0.8)       charge 0..1 published on battery_state; < 0 publishes none
  drive_s (2.0)       seconds from a goal to its end
  outcome ("succeed") what goals end with: "succeed" or "abort"
  error_code (9000)   with outcome abort: the result's error_code
  error_msg ("")      with outcome abort: the result's error_msg
  record ("")         file to append events to (JSON lines)

nav2_msgs is Nav2's interface package; where Nav2 is not installed the
project builds an identical copy (test/interfaces).
"""
import json
import math
import sys
import threading
import time

import rclpy
import rclpy.executors
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav2_msgs.action import NavigateToPose
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Empty


def duration(s: float) -> Duration:
    s = max(0.0, s)
    return Duration(sec=int(s), nanosec=int((s - int(s)) * 1e9))


class Nav2StandIn(Node):
    def __init__(self):
        super().__init__("nav2_standin")
        self.battery = float(self.declare_parameter("battery", 0.8).value)
        self.drive_s = float(self.declare_parameter("drive_s", 2.0).value)
        self.outcome = str(self.declare_parameter("outcome", "succeed").value)
        self.error_code = int(self.declare_parameter("error_code", 9000).value)
        self.error_msg = str(self.declare_parameter("error_msg", "").value)
        self.record_path = str(self.declare_parameter("record", "").value)
        if self.outcome not in ("succeed", "abort"):
            raise SystemExit(f"outcome must be 'succeed' or 'abort', got {self.outcome!r}")
        self.lock = threading.Lock()
        self.pose = (0.0, 0.0)
        self.current = 0  # number of the goal being driven (action)
        group = ReentrantCallbackGroup()
        # names are remappable: -r navigate_to_pose:=/robot1/navigate_to_pose
        self.server = ActionServer(self, NavigateToPose, "navigate_to_pose", self.execute,
                                   goal_callback=lambda _g: GoalResponse.ACCEPT,
                                   cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                   callback_group=group)
        self.create_subscription(PoseStamped, "goal_pose", self.on_goal, 10, callback_group=group)
        self.create_subscription(Empty, "stop", self.on_stop, 10, callback_group=group)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "amcl_pose", latched)
        self.battery_pub = self.create_publisher(BatteryState, "battery_state", 10)
        self.driving = None  # topic goal: (goal, arrival time)
        self.create_timer(0.1, self.tick, callback_group=group)
        self.create_timer(1.0, self.publish_battery, callback_group=group)
        self.publish_battery()

    def record(self, event: dict):
        line = json.dumps(event)
        print(line, flush=True)
        if self.record_path:
            with self.lock, open(self.record_path, "a") as f:
                f.write(line + "\n")

    def goal_event(self, g: PoseStamped, via: str) -> dict:
        p, q = g.pose.position, g.pose.orientation
        return {"event": "goal", "via": via, "frame_id": g.header.frame_id, "x": p.x, "y": p.y,
                "qz": q.z, "qw": q.w, "stamp": g.header.stamp.sec + g.header.stamp.nanosec * 1e-9}

    def arrive(self, g: PoseStamped, via: str):
        m = PoseWithCovarianceStamped()
        m.header.frame_id = g.header.frame_id
        m.header.stamp = self.get_clock().now().to_msg()
        m.pose.pose = g.pose
        self.pose = (g.pose.position.x, g.pose.position.y)
        self.pose_pub.publish(m)
        self.record({"event": "arrived", "via": via, "x": g.pose.position.x, "y": g.pose.position.y})

    # -- the action, as bt_navigator serves it --------------------------------
    def execute(self, gh):
        g = gh.request.pose
        with self.lock:
            self.current += 1
            mine = self.current
        self.record({**self.goal_event(g, "action"), "goal": mine})
        start = time.monotonic()
        x0, y0 = self.pose
        dist0 = math.hypot(g.pose.position.x - x0, g.pose.position.y - y0)
        result = NavigateToPose.Result()
        while True:
            if self.current != mine:
                # preempted by a newer goal: Nav2 aborts the old one
                gh.abort()
                self.record({"event": "preempted", "goal": mine})
                return result
            if gh.is_cancel_requested:
                gh.canceled()
                self.record({"event": "cancelled", "goal": mine})
                return result
            elapsed = time.monotonic() - start
            if elapsed >= self.drive_s:
                break
            left = 1.0 - elapsed / self.drive_s
            fb = NavigateToPose.Feedback()
            fb.current_pose.header.frame_id = g.header.frame_id
            fb.current_pose.pose.position.x = g.pose.position.x - (g.pose.position.x - x0) * left
            fb.current_pose.pose.position.y = g.pose.position.y - (g.pose.position.y - y0) * left
            fb.navigation_time = duration(elapsed)
            fb.estimated_time_remaining = duration(self.drive_s - elapsed)
            fb.distance_remaining = float(dist0 * left)
            gh.publish_feedback(fb)
            time.sleep(0.1)
        if self.outcome == "abort":
            result.error_code = self.error_code
            result.error_msg = self.error_msg
            gh.abort()
            self.record({"event": "aborted", "goal": mine, "error_code": self.error_code})
            return result
        gh.succeed()
        self.arrive(g, "action")
        return result

    # -- nav_mode topic -------------------------------------------------------
    def on_goal(self, g: PoseStamped):
        self.record(self.goal_event(g, "topic"))
        self.driving = (g, time.monotonic() + self.drive_s)

    def on_stop(self, _msg: Empty):
        self.record({"event": "stop", "was_driving": self.driving is not None})
        self.driving = None

    def tick(self):
        if self.driving and time.monotonic() >= self.driving[1]:
            g = self.driving[0]
            self.driving = None
            self.arrive(g, "topic")

    def publish_battery(self):
        if self.battery < 0:
            return
        b = BatteryState()
        b.header.stamp = self.get_clock().now().to_msg()
        b.percentage = self.battery
        b.voltage = 11.1 + 1.5 * self.battery
        b.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
        b.present = True
        self.battery_pub.publish(b)


def main():
    rclpy.init()
    node = Nav2StandIn()
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
