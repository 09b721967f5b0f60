//! Exit statuses: a script can tell "fix your privileges" from "fix your
//! device name" from "this kernel cannot do it".

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Failure = 1,
    Usage = 2,
    Privilege = 3,
    Device = 4,
    Unsupported = 5,
    /// A live join (`--listen`/`--peer`) was requested and did not happen,
    /// or ended before this node's last events reached the listener: the
    /// session is in its recording, to be joined offline.
    NoJoin = 6,
}

/// An error on its way to `main`, with the status it exits with.
#[derive(Debug)]
pub struct Fatal {
    pub status: Status,
    pub error: anyhow::Error,
}

impl Fatal {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Fatal {
        Fatal {
            status,
            error: error.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.status as u8)
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(error: anyhow::Error) -> Fatal {
        Fatal {
            status: Status::Failure,
            error,
        }
    }
}

/// `.fatal(Status::Device)` on any result.
pub trait OrFatal<T> {
    fn fatal(self, status: Status) -> Result<T, Fatal>;
}

impl<T, E: Into<anyhow::Error>> OrFatal<T> for Result<T, E> {
    fn fatal(self, status: Status) -> Result<T, Fatal> {
        self.map_err(|e| Fatal::new(status, e))
    }
}
