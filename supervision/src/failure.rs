//! A child's failure as a value: the error itself and its class.
//!
//! An actor fails by returning `Err(ChildFailure)` from a handler or from
//! `pre_start` (ractor boxes it); the supervisor takes it back out of the
//! box, so the tree, the logs and the metrics get the class the error was
//! given where it happened, and whoever cares can downcast to the error
//! type. The class is a stable label (`socket_dead`, `path_failed`,
//! `config`, ...) from the domain's own classification; this crate only
//! carries it. Only ractor's own reasons (a kill, a cancelled task) and
//! panics, which ractor hands over as their message, arrive as text.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use ractor::ActorProcessingErr;

/// The class of an error that reached a supervisor without one: a panic
/// (ractor passes it on as its message) or an error from ractor itself.
pub const PANIC: &str = "panic";

/// An error that knows its own failure class.
pub trait Classify: Error + Send + Sync + 'static {
    /// A stable label for the tree and metrics.
    fn class(&self) -> &'static str;
}

/// Why a child failed: its class and the error value.
#[derive(Clone)]
pub struct ChildFailure {
    class: &'static str,
    error: Arc<dyn Error + Send + Sync + 'static>,
}

impl ChildFailure {
    /// A failure of class `class` carrying `error`.
    pub fn new(class: &'static str, error: impl Error + Send + Sync + 'static) -> Self {
        Self {
            class,
            error: Arc::new(error),
        }
    }

    /// A failure carrying an error that classifies itself.
    pub fn of<E: Classify>(error: E) -> Self {
        Self::new(error.class(), error)
    }

    /// The failure's class label.
    pub fn class(&self) -> &'static str {
        self.class
    }

    /// The error itself.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error as its own type, when it is one.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref::<E>()
    }

    /// Takes a failure back out of what ractor reports. Anything that is
    /// not a `ChildFailure` is a panic's message (or ractor's own error)
    /// and is classed [`PANIC`].
    pub fn from_processing_err(err: ActorProcessingErr) -> Self {
        match err.downcast::<ChildFailure>() {
            Ok(failure) => *failure,
            Err(other) => Self {
                class: PANIC,
                error: Arc::from(other),
            },
        }
    }

    /// A failure from a panic caught outside ractor (a start function, a
    /// task child's task).
    pub fn panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => match payload.downcast::<&str>() {
                Ok(s) => s.to_string(),
                Err(_) => "panicked".to_string(),
            },
        };
        Self::new(PANIC, Panicked(message))
    }
}

impl fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error, self.class)
    }
}

impl fmt::Debug for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildFailure")
            .field("class", &self.class)
            .field("error", &self.error)
            .finish()
    }
}

impl Error for ChildFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.error)
    }
}

/// Two failures are alike when their class and message are (the error
/// types need not be comparable).
impl PartialEq for ChildFailure {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for ChildFailure {}

/// A panic's message.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
pub struct Panicked(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("socket gone")]
    struct Gone;

    impl Classify for Gone {
        fn class(&self) -> &'static str {
            "socket_dead"
        }
    }

    #[test]
    fn a_failure_survives_ractors_box_with_its_class_and_type() {
        let boxed: ActorProcessingErr = ChildFailure::of(Gone).into();
        let failure = ChildFailure::from_processing_err(boxed);
        assert_eq!(failure.class(), "socket_dead");
        assert!(failure.downcast_ref::<Gone>().is_some());
        assert_eq!(failure.to_string(), "socket gone (socket_dead)");
    }

    #[test]
    fn text_from_ractor_is_a_panic() {
        let boxed: ActorProcessingErr = "boom".into();
        let failure = ChildFailure::from_processing_err(boxed);
        assert_eq!(failure.class(), PANIC);
        assert_eq!(failure.error().to_string(), "boom");
        let caught = ChildFailure::panic(Box::new("oops"));
        assert_eq!(caught.to_string(), "panicked: oops (panic)");
    }
}
