//! What the utility VM did, read back from the step record the job left on the working
//! disk (or, when it left none, from its console lines), and the verdict on it.

use crate::job::Job;

/// One line of the record: `start`, `multi-user RC`, `begin KIND N`, `end KIND N RC`,
/// `done`, `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    MultiUser(i32),
    Begin { kind: String, index: usize },
    End { kind: String, index: usize, rc: i32 },
    Done,
    Failed,
}

/// Parses the record; lines it does not know are skipped.
pub fn parse(text: &str) -> Vec<Event> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Event> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["start"] => Some(Event::Start),
        ["done"] => Some(Event::Done),
        ["failed"] => Some(Event::Failed),
        ["multi-user", rc] => rc.parse().ok().map(Event::MultiUser),
        ["begin", kind, n] => Some(Event::Begin { kind: kind.to_string(), index: n.parse().ok()? }),
        ["end", kind, n, rc] => {
            Some(Event::End { kind: kind.to_string(), index: n.parse().ok()?, rc: rc.parse().ok()? })
        }
        _ => None,
    }
}

/// The events among console lines: those that carry this run's marker.
pub fn from_console(console: &str, marker: &str) -> Vec<Event> {
    console.lines().filter_map(|l| l.find(marker).map(|at| &l[at + marker.len()..])).filter_map(parse_line).collect()
}

fn label(job: &Job, kind: &str, index: usize) -> String {
    job.step(kind, index).map(|s| s.label.clone()).unwrap_or_else(|| format!("utility step {kind} {index}"))
}

/// The step that had begun and not ended, if any: what the VM was doing when it stopped.
pub fn running(job: &Job, events: &[Event]) -> Option<String> {
    match events.iter().rev().find(|e| matches!(e, Event::Begin { .. } | Event::End { .. }))? {
        Event::Begin { kind, index } => Some(label(job, kind, *index)),
        _ => None,
    }
}

/// Ok when every step ran and succeeded; else the one-line reason.
pub fn verdict(job: &Job, events: &[Event]) -> Result<(), String> {
    if let Some(Event::End { kind, index, rc }) = events.iter().find(|e| matches!(e, Event::End { rc, .. } if *rc != 0))
    {
        return Err(format!("{} failed with exit status {rc}", label(job, kind, *index)));
    }
    if events.contains(&Event::Done) {
        return Ok(());
    }
    if events.is_empty() {
        return Err(
            "the utility VM stopped without running the customizations; see file console.log of this image".to_string()
        );
    }
    match running(job, events) {
        Some(step) => Err(format!("the utility VM stopped while {step} ran; see file console.log of this image")),
        None => {
            Err("the utility VM stopped before the customizations finished; see file console.log of this image"
                .to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job;

    fn job() -> Job {
        let f = job::parse(
            "<template><packages><package name='xorriso'/></packages>\
<commands><command name='mount'>mount /dev/vdb1 /mnt</command><command name='iso'>xorriso</command></commands></template>",
        )
        .unwrap();
        job::build(&f, "MK-9", &|_: &str| Ok(Vec::new())).unwrap()
    }

    #[test]
    fn a_full_run_is_ok() {
        let ev = parse("start\nmulti-user 0\nbegin packages 0\nend packages 0 0\nbegin command 0\nend command 0 0\nbegin command 1\nend command 1 0\ndone\n");
        assert_eq!(ev.len(), 9);
        assert_eq!(verdict(&job(), &ev), Ok(()));
    }

    #[test]
    fn a_failed_command_is_named_with_its_status() {
        let ev =
            parse("start\nmulti-user 0\nbegin command 0\nend command 0 0\nbegin command 1\nend command 1 3\nfailed\n");
        assert_eq!(verdict(&job(), &ev), Err("utility command 'iso' failed with exit status 3".into()));
        let ev = parse("start\nbegin packages 0\nend packages 0 100\nfailed\n");
        assert_eq!(
            verdict(&job(), &ev),
            Err("installing the utility packages (xorriso) failed with exit status 100".into())
        );
    }

    #[test]
    fn an_interrupted_run_says_what_ran() {
        let ev = parse("start\nmulti-user 0\nbegin command 0\nend command 0 0\nbegin command 1\n");
        assert_eq!(running(&job(), &ev).as_deref(), Some("utility command 'iso'"));
        assert!(verdict(&job(), &ev)
            .unwrap_err()
            .starts_with("the utility VM stopped while utility command 'iso' ran"));
        assert!(verdict(&job(), &[]).unwrap_err().starts_with("the utility VM stopped without running"));
    }

    #[test]
    fn console_lines_need_the_marker() {
        let console = "[   44.1] sh[236]: MK-9 start\r\n[ 45.0] sh[236]: MK-9 begin command 1\nbegin command 0\nMK-8 end command 1 0\n";
        let ev = from_console(console, "MK-9");
        assert_eq!(ev, vec![Event::Start, Event::Begin { kind: "command".into(), index: 1 }]);
    }
}
