//! Waiting, with a timeout, for a line on a child's stdout, e.g. the tracer
//! printing "attached" or its verdict about a lost frame.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How many of the last lines an error message quotes.
const QUOTED_LINES: usize = 20;

/// Reads lines of a stream on a background thread.
///
/// Blocking reads cannot time out, so a thread does them and hands lines
/// over a channel. The thread keeps draining the stream even when nobody
/// waits, so a chatty child never blocks on a full pipe; it ends at EOF.
pub struct LineReader {
    lines: Receiver<std::io::Result<String>>,
    seen: Vec<String>,
    ended: bool,
}

impl LineReader {
    /// Starts reading `stream` (typically `child.stdout.take().unwrap()`).
    pub fn new<R: Read + Send + 'static>(stream: R) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    break;
                }
            }
        });
        LineReader {
            lines: rx,
            seen: Vec::new(),
            ended: false,
        }
    }

    /// Returns the first line (not returned before) for which `predicate`
    /// holds; fails on timeout or end of stream, quoting the recent lines.
    pub fn wait_for_line(
        &mut self,
        mut predicate: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ended {
                bail!(
                    "output ended before a matching line (did the program exit?); last lines:\n{}",
                    self.recent()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Ok(line)) => {
                    self.seen.push(line.clone());
                    if predicate(&line) {
                        return Ok(line);
                    }
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    bail!("reading output failed: {e}; last lines:\n{}", self.recent());
                }
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
                Err(RecvTimeoutError::Timeout) => bail!(
                    "no matching line within {timeout:?}; last lines:\n{}",
                    self.recent()
                ),
            }
        }
    }

    /// Every line read so far, in order.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    fn recent(&self) -> String {
        let start = self.seen.len().saturating_sub(QUOTED_LINES);
        if start == self.seen.len() {
            return "  (none)".to_owned();
        }
        self.seen[start..]
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One-shot form of [`LineReader::wait_for_line`]; the reader is returned so
/// the caller can keep waiting for later lines.
pub fn wait_for_line<R: Read + Send + 'static>(
    stream: R,
    predicate: impl FnMut(&str) -> bool,
    timeout: Duration,
) -> Result<(String, LineReader)> {
    let mut reader = LineReader::new(stream);
    let line = reader.wait_for_line(predicate, timeout)?;
    Ok((line, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_line_and_keeps_going() {
        let (line, mut reader) = wait_for_line(
            &b"starting\nattached to eth1\nlost at fabric\n"[..],
            |l| l.starts_with("attached"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(line, "attached to eth1");
        let next = reader
            .wait_for_line(|l| l.contains("lost"), Duration::from_secs(1))
            .unwrap();
        assert_eq!(next, "lost at fabric");
        assert_eq!(reader.seen().len(), 3);
    }

    #[test]
    fn reports_end_of_stream_with_context() {
        let err = wait_for_line(&b"only line\n"[..], |_| false, Duration::from_secs(1))
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("output ended"), "{text}");
        assert!(text.contains("only line"), "{text}");
    }

    #[test]
    fn times_out_on_a_silent_stream() {
        // A pipe whose write end stays open never reaches EOF.
        let (read, _write) = std::io::pipe().unwrap();
        let start = Instant::now();
        let err = wait_for_line(read, |_| true, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no matching line"));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
