//! A minimal QMP client: qemu's machine protocol, line-delimited JSON over a unix socket.
//!
//! The engine asks qemu only a few things (block statistics for the watchdog, a
//! screendump on failure), so this is a blocking request/response client that skips the
//! asynchronous events qemu interleaves. Every read is bounded by a socket timeout: a
//! wedged qemu cannot hang the build.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::GuestError;

/// The longest any one QMP command may take (a screendump of a large screen included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected QMP session, past capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Qmp {
    /// Connects to qemu's QMP socket, waiting up to `within` for qemu to create it.
    /// `alive` is asked between tries so a qemu that failed to start ends the wait.
    pub fn connect(socket: &Path, within: Duration, alive: &mut dyn FnMut() -> bool) -> Result<Qmp, GuestError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) => {
                    if start.elapsed() >= within || !alive() {
                        return Err(GuestError::Qmp(format!("cannot connect to {}: {e}", socket.display())));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(|e| io("set a QMP read timeout", e))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(|e| io("set a QMP write timeout", e))?;
        let writer = stream.try_clone().map_err(|e| io("clone the QMP socket", e))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer, next_id: 0 };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(GuestError::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value; an `error` reply is an error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, GuestError> {
        // Each request carries its own id, and replies to an earlier request (one that
        // timed out on a loaded host and was answered late) are skipped.
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            request["arguments"] = a;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| io("send a QMP command", e))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                return Err(GuestError::Qmp(format!("{command}: no reply within {} s", REPLY_TIMEOUT.as_secs())));
            }
            let msg = self.read_message()?;
            if msg.get("event").is_some() || msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(r) = msg.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = msg.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(GuestError::Qmp(format!("{command}: {desc}")));
            }
        }
    }

    /// The sum of the guest's disk traffic over all drives.
    pub fn block_stats(&mut self) -> Result<BlockTotals, GuestError> {
        let v = self.execute("query-blockstats", None)?;
        Ok(BlockTotals::from_reply(&v))
    }

    /// The VM's run state (`running`, `paused`, `shutdown`, `internal-error`, ...).
    pub fn query_status(&mut self) -> Result<String, GuestError> {
        let v = self.execute("query-status", None)?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| GuestError::Qmp(format!("query-status: unexpected reply {v}")))
    }

    /// Asks qemu to write the screen as a PPM file.
    pub fn screendump(&mut self, ppm: &Path) -> Result<(), GuestError> {
        let file = ppm.to_str().ok_or_else(|| GuestError::Config(format!("{} is not a UTF-8 path", ppm.display())))?;
        self.execute("screendump", Some(json!({ "filename": file }))).map(|_| ())
    }

    fn read_message(&mut self) -> Result<Value, GuestError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| io("read a QMP reply", e))?;
        if n == 0 {
            return Err(GuestError::Qmp("qemu closed its QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|e| GuestError::Qmp(format!("unreadable QMP message ({e}): {line}")))
    }
}

/// Disk traffic summed over every drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockTotals {
    pub rd_operations: u64,
    pub wr_operations: u64,
    pub wr_bytes: u64,
}

impl BlockTotals {
    /// Sums `query-blockstats`' reply (an array of `{device, stats: {...}}`).
    pub fn from_reply(v: &Value) -> BlockTotals {
        let mut t = BlockTotals::default();
        for dev in v.as_array().into_iter().flatten() {
            let s = &dev["stats"];
            let get = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
            t.rd_operations += get("rd_operations");
            t.wr_operations += get("wr_operations");
            t.wr_bytes += get("wr_bytes");
        }
        t
    }
}

fn io(what: &str, source: std::io::Error) -> GuestError {
    GuestError::Io { what: format!("cannot {what}"), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_blockstats_over_devices() {
        let v: Value = serde_json::from_str(
            r#"[{"device":"","node-name":"d0","stats":{"rd_operations":3,"wr_operations":2,"wr_bytes":1024}},
                {"device":"cd0","stats":{"rd_operations":10,"wr_operations":0,"wr_bytes":0}}]"#,
        )
        .unwrap();
        assert_eq!(BlockTotals::from_reply(&v), BlockTotals { rd_operations: 13, wr_operations: 2, wr_bytes: 1024 });
        assert_eq!(BlockTotals::from_reply(&json!({})), BlockTotals::default());
    }
}
