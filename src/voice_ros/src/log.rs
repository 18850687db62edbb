//! Logging through the ROS logger (so `ros2 run` / `ros2 launch` users see it),
//! plus a throttle for warnings about bad input.

use std::time::{Duration, Instant};

/// A node's logger name with convenience methods.
#[derive(Debug, Clone)]
pub struct Log {
    name: String,
}

impl Log {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
    pub fn debug(&self, msg: impl AsRef<str>) {
        r2r::log_debug!(&self.name, "{}", msg.as_ref());
    }
    pub fn info(&self, msg: impl AsRef<str>) {
        r2r::log_info!(&self.name, "{}", msg.as_ref());
    }
    pub fn warn(&self, msg: impl AsRef<str>) {
        r2r::log_warn!(&self.name, "{}", msg.as_ref());
    }
    pub fn error(&self, msg: impl AsRef<str>) {
        r2r::log_error!(&self.name, "{}", msg.as_ref());
    }
}

/// Lets one message through per period and counts the ones it held back.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(suppressed_since_last)` when a message may be logged now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}
