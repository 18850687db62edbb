//! `/diagnostics` (diagnostic_msgs/DiagnosticArray) publishing.

use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};

/// Diagnostic levels (DiagnosticStatus constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

impl Level {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Level::Ok => DiagnosticStatus::OK as u8,
            Level::Warn => DiagnosticStatus::WARN as u8,
            Level::Error => DiagnosticStatus::ERROR as u8,
        }
    }
}

/// One node's status, built key by key.
pub struct Report {
    status: DiagnosticStatus,
}

impl Report {
    /// `name` is the node's fully qualified name, `hardware_id` what it runs (the model).
    pub fn new(name: &str, hardware_id: &str) -> Self {
        Self {
            status: DiagnosticStatus {
                level: Level::Ok.byte(),
                name: name.into(),
                message: "ok".into(),
                hardware_id: hardware_id.into(),
                values: Vec::new(),
            },
        }
    }

    pub fn level(mut self, level: Level, message: impl Into<String>) -> Self {
        self.status.level = level.byte();
        self.status.message = message.into();
        self
    }

    pub fn kv(mut self, key: &str, value: impl ToString) -> Self {
        self.status.values.push(KeyValue {
            key: key.into(),
            value: value.to_string(),
        });
        self
    }

    pub fn into_array(self) -> DiagnosticArray {
        let mut a = DiagnosticArray {
            status: vec![self.status],
            ..Default::default()
        };
        a.header.stamp = crate::stamp::now();
        a
    }
}
