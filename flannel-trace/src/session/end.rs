//! The end of a trace session: the summary, the last of the live stream,
//! the final verdict, and whether the live join happened.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use flannel_trace_common::Counter;
use tokio::sync::mpsc;

use super::{
    events::{Session, counters},
    joined::Remote,
};
use crate::{
    datapath::Probes,
    exit::{Fatal, Status},
    peer::{Control, Message},
    render,
    schema::record::Record,
};

impl Session<'_> {
    pub async fn finish(
        &mut self,
        probes: &mut Probes,
        remote_rx: &mut mpsc::Receiver<Remote>,
    ) -> Result<(), Fatal> {
        let counters = counters(probes).context("reading the programs' counters")?;
        self.summary.lost = counters.get(&Counter::RingbufFull).copied().unwrap_or(0);
        self.summary.unparsed = counters.get(&Counter::Unparsed).copied().unwrap_or(0);
        self.summary.probe_read_errors = counters.get(&Counter::ProbeRead).copied().unwrap_or(0);
        self.summary.complete = self.summary.lost == 0
            && self.summary.decode_errors == 0
            && self.summary.probe_read_errors == 0;
        let summary = self.summary.clone();
        self.sinks.summary(&summary)?;
        if let Some(stream) = self.link.take_stream()
            && let Some(why) = stream.close(&summary).await
        {
            self.join_missing = Some(why);
        }
        if self.joiner.is_some() {
            if self.link.receiving() {
                // Give the peer a moment to deliver its last events and summary.
                let until = tokio::time::Instant::now() + Duration::from_secs(3);
                while let Ok(Some(msg)) = tokio::time::timeout_at(until, remote_rx.recv()).await {
                    match msg {
                        Ok(Some(Message::Control(Control::Bye))) | Ok(None) | Err(_) => break,
                        Ok(Some(m)) => self.remote(m),
                    }
                }
            }
            let j = self.joiner.as_mut().expect("checked");
            j.local_gaps.extend(summary.gaps());
            match j.report(summary.lost, Some(summary.end_wall_ns), true) {
                Some(report) if self.sinks.json => {
                    self.sinks.json_line(&Record::Verdict(report))?
                }
                Some(report) => self.sinks.line(&render::verdict::text(&report))?,
                None => {
                    self.join_missing
                        .get_or_insert_with(|| "no peer joined before the end".into());
                }
            }
        }
        self.sinks.flush()?;
        match (self.join_missing.take(), &self.sinks.record_path) {
            (None, _) => Ok(()),
            (Some(why), Some(path)) => Err(Fatal::new(
                Status::NoJoin,
                anyhow!(
                    "the live join did not happen ({why}); this node's session is recorded in {p}. \
                     When the other node has stopped, join the two recordings with:\n  \
                     flannel-trace join {p} <the other node's recording>",
                    p = path.display()
                ),
            )),
            (Some(why), None) => Err(Fatal::new(
                Status::NoJoin,
                anyhow!("the live join did not happen ({why})"),
            )),
        }
    }
}
