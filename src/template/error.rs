//! Why a template fails, and the limits that keep one from the command line from
//! crashing or exhausting the machine: how deep it may nest, how many steps a render
//! may take, how long a string it may make.

/// How deeply blocks (`if`/`range`/`with`) and parentheses may nest: far more than a
/// real format needs, few enough that parsing and evaluating cannot exhaust the stack.
pub(super) const MAX_NESTING: usize = 100;
/// The most nodes, range iterations and commands one render may evaluate.
pub(super) const MAX_STEPS: u64 = 1_000_000;
/// The longest string (the output included) a render may make, in bytes.
pub(super) const MAX_TEXT: usize = 16 << 20;

/// Why a template could not be parsed or rendered. The texts are Go's where Go has
/// one (`template: unexpected {{end}}`), so that a message reads as docker's does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template text is not a template we can run (syntax, or an unsupported action).
    #[error("template: {0}")]
    Parse(String),
    /// Running it failed: a missing field, a bad argument, a function we lack, a limit.
    #[error("template: {0}")]
    Exec(String),
    /// The whole output of a listing grew past `MAX_TEXT`.
    #[error("output: result longer than {} MiB", MAX_TEXT >> 20)]
    OutputTooLong,
    /// A value could not be written as JSON (`{{json .}}`, `--format json`).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Refuse to make a string longer than `MAX_TEXT` bytes (before making it, where the
/// length is known in advance).
pub(super) fn check_len(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_TEXT {
        return Err(Error::Exec(format!("{what}: result longer than {} MiB", MAX_TEXT >> 20)));
    }
    Ok(())
}
