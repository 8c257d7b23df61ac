/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Two states of one operator were registered under the same name.
    #[error("state '{0}' is registered twice in this operator")]
    DuplicateName(String),
    /// A state was registered with one type and used with another.
    #[error("state '{name}' has type {registered}, not {requested}")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// The type it was registered with.
        registered: &'static str,
        /// The type it was asked for.
        requested: &'static str,
    },
    /// A max parallelism outside 1..=32768.
    #[error("max parallelism must be between 1 and 32768, got {0}")]
    BadMaxParallelism(u32),
}
