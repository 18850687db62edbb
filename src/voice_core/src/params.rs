//! Parameter validation helpers shared by the nodes' parameter structs.

use std::fmt::Display;
use std::ops::RangeInclusive;

/// A parameter value a node cannot run with; the message names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter {name}: {msg}")]
pub struct ParamError {
    pub name: &'static str,
    pub msg: String,
}

/// `Ok` when `ok`, else the error for `name` with the message `msg()`.
pub fn check(ok: bool, name: &'static str, msg: impl FnOnce() -> String) -> Result<(), ParamError> {
    if ok {
        Ok(())
    } else {
        Err(ParamError { name, msg: msg() })
    }
}

/// `Ok` when `value` lies in `range` (NaN never does), else
/// "must be {start}..={end}, got {value}" for `name`.
pub fn in_range<T: PartialOrd + Display>(
    value: T,
    range: RangeInclusive<T>,
    name: &'static str,
) -> Result<(), ParamError> {
    check(range.contains(&value), name, || {
        format!("must be {}..={}, got {value}", range.start(), range.end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range_names_the_parameter_and_the_bounds() {
        assert!(in_range(4, 1..=256, "n_threads").is_ok());
        let e = in_range(0, 1..=256, "n_threads").unwrap_err();
        assert_eq!(e.to_string(), "parameter n_threads: must be 1..=256, got 0");
        let e = in_range(7.5, 0.0..=5.0, "temperature").unwrap_err();
        assert_eq!(e.msg, "must be 0..=5, got 7.5");
        assert!(in_range(f64::NAN, 0.0..=5.0, "temperature").is_err());
        assert!(in_range(0.5, 0.5..=3.0, "repeat_penalty").is_ok());
    }
}
