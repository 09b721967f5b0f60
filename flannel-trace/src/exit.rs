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

/// Flags that cannot run together: a usage error.
impl From<crate::options::OptionsError> for Fatal {
    fn from(e: crate::options::OptionsError) -> Fatal {
        Fatal::new(Status::Usage, e)
    }
}

/// A device named wrong (usage) or missing / of the wrong kind (device).
impl From<crate::session::NodeError> for Fatal {
    fn from(e: crate::session::NodeError) -> Fatal {
        let status = if e.is_usage() {
            Status::Usage
        } else {
            Status::Device
        };
        Fatal::new(status, e)
    }
}

impl From<crate::session::AttachError> for Fatal {
    fn from(e: crate::session::AttachError) -> Fatal {
        Fatal::new(e.status(), e)
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

/// The error and its causes on one line, each cause once. Many of our
/// errors (thiserror with `{source}` in the message *and* the field as the
/// source) already say their cause, so printing the chain with `{:#}`
/// repeated it ("…: missing field `time`: missing field `time`"); a cause
/// whose text is already in the line is left out.
pub fn render(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_printed_once() {
        let json = serde_json::from_str::<crate::schema::event::Event>("{}").unwrap_err();
        let frame = crate::schema::wire::FrameError::Json(json);
        let err = crate::schema::recording::RecordError::Corrupt {
            path: "a.rec".into(),
            offset: 8,
            source: frame,
        };
        let line = render(&anyhow::Error::new(err));
        assert_eq!(line.matches("missing field").count(), 1, "{line}");
        assert!(line.starts_with("a.rec is corrupt at byte 8"), "{line}");
        // A context that does not repeat its cause still shows it.
        let e = anyhow::anyhow!("disk full").context("writing a.rec");
        assert_eq!(render(&e), "writing a.rec: disk full");
    }
}
