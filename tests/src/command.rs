//! Running the external tools (`ip`, `bridge`, `nft`, `ping`) with errors
//! that say exactly which command failed and what it printed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// The command line as a user would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion, feeding `stdin` if given. Only a failure to
/// start (or to talk to) the program is an error; the exit status is left to
/// the caller.
pub(crate) fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    let line = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    if let Some(input) = stdin {
        // The inputs are small rulesets, far below the pipe buffer, so
        // writing everything before reading the output cannot deadlock.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input)
            .with_context(|| format!("could not write stdin of `{line}`"))?;
    }
    child
        .wait_with_output()
        .with_context(|| format!("could not wait for `{line}`"))
}

/// Runs `cmd` and fails unless it exits 0; the error quotes the command and
/// its stderr, which is where `ip` and `nft` explain themselves.
pub(crate) fn checked(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    let out = output(cmd, stdin)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
