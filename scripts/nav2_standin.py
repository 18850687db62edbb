#!/usr/bin/env python3
"""A stand-in for Nav2 (and a robot base) for tests and demos without a robot.

It does what llm_node's intent layer talks to:
- takes goals on `goal_pose` (geometry_msgs/PoseStamped), as Nav2's
  bt_navigator does, "drives" there in drive_s seconds and then publishes the
  goal as the robot's pose on `amcl_pose` (PoseWithCovarianceStamped, latched,
  like AMCL);
- takes stops on `stop` (std_msgs/Empty) and cancels the drive;
- publishes a sensor_msgs/BatteryState on `battery_state` once a second
  (--battery 0.42 = 42 %).

Every goal and stop it receives is printed as one JSON line on stdout and,
with the `record` parameter set, appended to that file, so a test can check
what "Nav2" got. Settings are ROS parameters:

  python scripts/nav2_standin.py --ros-args -p battery:=0.42 -p record:=/tmp/nav.jsonl

  battery (0.8)   charge 0..1 published on battery_state; < 0 publishes none
  drive_s (2.0)   seconds from a goal to "arrival"
  record ("")     file to append received goals and stops to (JSON lines)
"""
import json
import sys
import time

import rclpy
import rclpy.executors
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Empty


class Nav2StandIn(Node):
    def __init__(self):
        super().__init__("nav2_standin")
        self.battery = float(self.declare_parameter("battery", 0.8).value)
        self.drive_s = float(self.declare_parameter("drive_s", 2.0).value)
        self.record_path = str(self.declare_parameter("record", "").value)
        # topic names are remappable: -r goal_pose:=/robot1/goal_pose
        self.create_subscription(PoseStamped, "goal_pose", self.on_goal, 10)
        self.create_subscription(Empty, "stop", self.on_stop, 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "amcl_pose", latched)
        self.battery_pub = self.create_publisher(BatteryState, "battery_state", 10)
        self.driving = None  # (goal, arrival time)
        self.create_timer(0.1, self.tick)
        self.create_timer(1.0, self.publish_battery)
        self.publish_battery()

    def record(self, event: dict):
        line = json.dumps(event)
        print(line, flush=True)
        if self.record_path:
            with open(self.record_path, "a") as f:
                f.write(line + "\n")

    def on_goal(self, g: PoseStamped):
        p, q = g.pose.position, g.pose.orientation
        self.record({"event": "goal", "frame_id": g.header.frame_id, "x": p.x, "y": p.y,
                     "qz": q.z, "qw": q.w, "stamp": g.header.stamp.sec + g.header.stamp.nanosec * 1e-9})
        self.driving = (g, time.monotonic() + self.drive_s)

    def on_stop(self, _msg: Empty):
        self.record({"event": "stop", "was_driving": self.driving is not None})
        self.driving = None

    def tick(self):
        if self.driving and time.monotonic() >= self.driving[1]:
            g = self.driving[0]
            self.driving = None
            m = PoseWithCovarianceStamped()
            m.header.frame_id = g.header.frame_id
            m.header.stamp = self.get_clock().now().to_msg()
            m.pose.pose = g.pose
            self.pose_pub.publish(m)
            self.record({"event": "arrived", "x": g.pose.position.x, "y": g.pose.position.y})

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
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
