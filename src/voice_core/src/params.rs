//! Parameter validation helpers shared by the nodes' parameter structs.

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
