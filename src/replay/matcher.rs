//! Compares the server side of a recording with what a server said in a new run, and writes
//! the result as a readable diff or as JSON. Sans-I/O: both sides come in as bytes already
//! grouped by the command they answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::canon::{Bindings, C, canon, matches};

/// Which exchange a server message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Group {
    Greeting,
    /// The n-th command of the session (0-based), in the order the client sent them.
    Command(usize),
    /// Untagged data while no command was in flight.
    Unsolicited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Recorded and received alike.
    Same,
    /// Recorded, not received.
    Missing,
    /// Received, not recorded.
    Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffLine {
    pub mark: Mark,
    pub text: String,
}

/// One command and its responses, compared.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: Group,
    /// The command as sent (`C:` line), secrets hidden.
    pub command: Option<String>,
    pub lines: Vec<DiffLine>,
}

impl GroupReport {
    pub fn differs(&self) -> bool {
        self.lines.iter().any(|l| l.mark != Mark::Same)
    }
}

/// The comparison of one transcript with one run.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub groups: Vec<GroupReport>,
    pub bindings: Bindings,
    pub matched: usize,
    pub missing: usize,
    pub extra: usize,
}

/// Extra untagged responses: a failure, or tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Extras {
    #[default]
    Forbid,
    Allow,
}

/// Compares `expected` with `received` group by group: within a group, responses may come in
/// any order; a tagged completion must match in status and code.
pub fn compare(
    commands: &BTreeMap<Group, String>,
    expected: &[(Group, Vec<u8>)],
    received: &[(Group, Vec<u8>)],
    extras: Extras,
) -> Comparison {
    /// Per group: what was recorded, what was received.
    type Sides<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);
    let mut by_group: BTreeMap<Group, Sides> = BTreeMap::new();
    for (g, b) in expected {
        by_group.entry(*g).or_default().0.push(b);
    }
    for (g, b) in received {
        by_group.entry(*g).or_default().1.push(b);
    }
    for g in commands.keys() {
        by_group.entry(*g).or_default();
    }
    let mut out = Comparison::default();
    for (group, (exp, rec)) in by_group {
        let rec_canon: Vec<Vec<C>> = rec.iter().map(|b| canon(b)).collect();
        let mut used = vec![false; rec.len()];
        let mut lines = Vec::new();
        for e in &exp {
            let ec = canon(e);
            let found = (0..rec.len())
                .find(|&i| !used[i] && matches(&ec, &rec_canon[i], &mut out.bindings));
            match found {
                Some(i) => {
                    used[i] = true;
                    out.matched += 1;
                    lines.push(DiffLine {
                        mark: Mark::Same,
                        text: show(rec[i]),
                    });
                }
                None => {
                    out.missing += 1;
                    lines.push(DiffLine {
                        mark: Mark::Missing,
                        text: show(e),
                    });
                }
            }
        }
        for (i, r) in rec.iter().enumerate() {
            if used[i] {
                continue;
            }
            let untagged = r.starts_with(b"* ");
            if extras == Extras::Allow && untagged {
                lines.push(DiffLine {
                    mark: Mark::Same,
                    text: format!("{} (extra, allowed)", show(r)),
                });
                continue;
            }
            out.extra += 1;
            lines.push(DiffLine {
                mark: Mark::Extra,
                text: show(r),
            });
        }
        out.groups.push(GroupReport {
            group,
            command: commands.get(&group).cloned(),
            lines,
        });
    }
    out
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }

    /// The unified diff: `C:` lines, recorded (`-`) vs received (`+`), unchanged (` `), the
    /// first divergence marked, then the variable bindings.
    pub fn render(&self, verbose: bool) -> String {
        let mut s = String::new();
        let mut first_marked = false;
        for g in &self.groups {
            let differs = g.differs();
            if !differs && !verbose {
                if let Some(c) = &g.command {
                    let _ = writeln!(s, "  C: {c}    ({} responses match)", g.lines.len());
                }
                continue;
            }
            if let Some(c) = &g.command {
                let _ = writeln!(s, "  C: {c}");
            } else if g.group == Group::Greeting {
                let _ = writeln!(s, "  (greeting)");
            }
            for line in &g.lines {
                let mark = match line.mark {
                    Mark::Same => ' ',
                    Mark::Missing => '-',
                    Mark::Extra => '+',
                };
                let _ = writeln!(s, "{mark} S: {}", line.text);
                if line.mark != Mark::Same && !first_marked {
                    first_marked = true;
                    let _ = writeln!(s, "  ^^^ first difference (- recorded, + received)");
                }
            }
        }
        let bindings = self.bindings.describe();
        if !bindings.is_empty() {
            let _ = writeln!(s, "  bindings: {}", bindings.join(", "));
        }
        s
    }
}

/// One message for a person: the first line without its ending; a literal summarized.
pub fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or("");
    let mut line: String = first.chars().take(160).collect();
    if first.chars().count() > 160 {
        line.push('…');
    }
    let rest = bytes.len().saturating_sub(first.len() + 2);
    if rest > 0 {
        let _ = write!(line, " … ({} more bytes)", rest);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_no_and_shows_where() {
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a1 SELECT INBOX".to_string());
        let g = Group::Command(0);
        let expected = vec![
            (g, b"* 2 EXISTS\r\n".to_vec()),
            (g, b"* OK [UIDVALIDITY 5] x\r\n".to_vec()),
            (g, b"a1 OK [READ-WRITE] done\r\n".to_vec()),
        ];
        let received = vec![
            (g, b"* OK [UIDVALIDITY 9] y\r\n".to_vec()),
            (g, b"* 3 EXISTS\r\n".to_vec()),
            (g, b"a1 OK [READ-WRITE] done (0.001 secs)\r\n".to_vec()),
        ];
        let c = compare(&commands, &expected, &received, Extras::Forbid);
        assert!(!c.ok());
        assert_eq!((c.matched, c.missing, c.extra), (2, 1, 1));
        let text = c.render(false);
        assert!(text.contains("- S: * 2 EXISTS"), "{text}");
        assert!(text.contains("+ S: * 3 EXISTS"), "{text}");
        assert!(text.contains("first difference"), "{text}");
        assert!(text.contains("UIDVALIDITY 5 -> 9"), "{text}");
        let same = compare(&commands, &expected, &expected, Extras::Forbid);
        assert!(same.ok());
    }

    #[test]
    fn extra_untagged_can_be_allowed() {
        let commands = BTreeMap::new();
        let g = Group::Command(0);
        let expected = vec![(g, b"a1 OK done\r\n".to_vec())];
        let received = vec![
            (g, b"* OK Still here\r\n".to_vec()),
            (g, b"a1 OK done\r\n".to_vec()),
        ];
        assert!(!compare(&commands, &expected, &received, Extras::Forbid).ok());
        assert!(compare(&commands, &expected, &received, Extras::Allow).ok());
    }
}
