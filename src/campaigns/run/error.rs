//! Why a campaign run could not go on, and the stable sentence its record keeps.

use crate::segments;
use crate::store::StoreError;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The daemon is stopping: the run stopped where its record says, and resumes later.
    #[error("the daemon is stopping")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Segment(#[from] segments::SegmentError),
    #[error(transparent)]
    Compose(#[from] crate::pipeline::compose::ComposeError),
    #[error("a task of the run failed: {0}")]
    Task(String),
    /// The campaign hook cannot be called (its secret cannot be opened).
    #[error(transparent)]
    Hook(#[from] crate::campaigns::hook::HookError),
}

impl RunError {
    /// The run's failure as a stable sentence for its record (internals go to the log).
    pub(super) fn reason(&self) -> String {
        use crate::pipeline::compose::ComposeError;
        use segments::SegmentError;
        match self {
            RunError::Stopped => "The daemon stopped.".into(),
            RunError::Hook(why) => format!("The campaign hook cannot be called: {why}."),
            RunError::Segment(SegmentError::NotFound(id)) => format!("The campaign's segment {id} no longer exists."),
            RunError::Segment(SegmentError::VersionNotFound(id, v)) => {
                format!("Version {v} of the campaign's segment {id} no longer exists.")
            }
            RunError::Segment(SegmentError::Invalid(why)) => format!("The campaign's segment cannot be evaluated: {why}."),
            RunError::Compose(ComposeError::Field(v)) => format!("The campaign's message is invalid: {}: {}.", v.field, v.description),
            RunError::Store(StoreError::Corrupt(_)) | RunError::Segment(SegmentError::Store(StoreError::Corrupt(_))) => {
                "A record the run needs could not be read.".into()
            }
            RunError::Store(_) | RunError::Segment(SegmentError::Store(_)) | RunError::Compose(ComposeError::Store(_)) => {
                "The store failed while the run was in progress.".into()
            }
            RunError::Task(_) => "A task of the run failed.".into(),
        }
    }
}
