//! `flannel-trace join A.rec B.rec`: the verdict from two recordings.

use anyhow::Context as _;

use crate::{
    cli::JoinArgs,
    exit::{Fatal, OrFatal as _, Status},
    record::{self, Recording},
    verdict::{self, NodeTrace, Options, render},
    wire::Message,
};

fn trace(r: &Recording) -> NodeTrace<'_> {
    let mut gaps = Vec::new();
    if r.summary.is_none() {
        gaps.push(format!(
            "{} has no summary: the tracer was stopped abruptly",
            r.path.display()
        ));
    }
    NodeTrace {
        identity: &r.identity,
        events: &r.events,
        lost: r.summary.as_ref().map_or(0, |s| s.lost),
        end_wall_ns: r.summary.as_ref().map(|s| s.end_wall_ns),
        gaps,
    }
}

pub fn run(args: JoinArgs) -> Result<(), Fatal> {
    let a = record::read(&args.files[0]).fatal(Status::Failure)?;
    let b = record::read(&args.files[1]).fatal(Status::Failure)?;
    let opts = Options {
        grace_ns: args.grace.as_nanos() as i64,
    };
    // Recordings carry each node's own wall clock; they are not compared.
    let report = verdict::judge(&trace(&a), &trace(&b), None, opts);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Message::Verdict(report))
                .context("encoding the verdict")?
        );
    } else {
        print!("{}", render::text(&report));
    }
    Ok(())
}
