//! Compares the server side of a recording with what a server said in a new run, and writes
//! the result as a readable diff or as JSON. Sans-I/O: both sides come in as bytes already
//! grouped by the command they answer.
//!
//! When a recorded response and a received one differ only inside (the same `* 3 FETCH`, a
//! different body), the pair is shown together with a unified diff of their lines, so a person
//! sees which header or body line changed rather than two summaries of the same size.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::canon::{Bindings, C, Scope, canon_in, matches};
use crate::protocol::message::{parse_command, parse_response};
use crate::protocol::token::string_value;

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
    /// For a received response paired with the recorded one it differs from: their lines,
    /// unified-diff style (`-` recorded, `+` received, ` ` context, `@@` hunk heads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

impl DiffLine {
    fn new(mark: Mark, text: String) -> DiffLine {
        DiffLine {
            mark,
            text,
            detail: Vec::new(),
        }
    }
}

/// One command and its responses, compared.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: Group,
    /// The command as sent (`C:` line), secrets hidden.
    pub command: Option<String>,
    pub lines: Vec<DiffLine>,
    /// The recording ended with this command unanswered: only what it has was compared.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut_off: bool,
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
/// any order; a tagged completion must match in status and code. `cut_off` names the commands
/// the recording stopped inside (no completion was recorded: the client quit during IDLE, or
/// was killed mid-FETCH): what the recording has of them must arrive, and whatever the server
/// said after that point is not a difference. `cut_short` holds the indexes in `expected` of
/// messages the recording has only the start of (the connection closed in the middle of
/// them): each matches a received message that starts the same way.
pub fn compare(
    commands: &BTreeMap<Group, String>,
    cut_off: &BTreeSet<Group>,
    expected: &[(Group, Vec<u8>)],
    cut_short: &BTreeSet<usize>,
    received: &[(Group, Vec<u8>)],
    extras: Extras,
) -> Comparison {
    /// Per group: what was recorded (and whether it was cut short), what was received.
    type Sides<'a> = (Vec<(&'a [u8], bool)>, Vec<&'a [u8]>);
    let mut by_group: BTreeMap<Group, Sides> = BTreeMap::new();
    for (i, (g, b)) in expected.iter().enumerate() {
        by_group
            .entry(*g)
            .or_default()
            .0
            .push((b, cut_short.contains(&i)));
    }
    for (g, b) in received {
        by_group.entry(*g).or_default().1.push(b);
    }
    for g in commands.keys() {
        by_group.entry(*g).or_default();
    }
    let mut out = Comparison::default();
    let mut selected: Option<Vec<u8>> = None;
    for (group, (exp, rec)) in by_group {
        let command = commands.get(&group);
        let scope = scope_of(command.map(String::as_str), &mut selected);
        let rec_canon: Vec<Vec<C>> = rec.iter().map(|b| canon_in(b, &scope)).collect();
        // Heads, for messages cut short: only a received message with the same head (`* 5
        // FETCH`) is cut and compared, which keeps the comparison linear.
        let rec_heads: Vec<Option<Head>> = match exp.iter().any(|(_, short)| *short) {
            true => rec.iter().map(|b| head_of(b)).collect(),
            false => Vec::new(),
        };
        let mut used = vec![false; rec.len()];
        let mut lines = Vec::new();
        let mut missing = Vec::new();
        for &(e, short) in &exp {
            let ec = canon_in(e, &scope);
            let e_head = if short { head_of(e) } else { None };
            let found = (0..rec.len()).find(|&i| {
                !used[i]
                    && if short {
                        if e_head.is_none() || rec_heads[i] != e_head {
                            return false;
                        }
                        let Some((e, r)) = closed_alike(e, rec[i]) else {
                            return false;
                        };
                        matches(
                            &canon_in(&e, &scope),
                            &canon_in(&r, &scope),
                            &mut out.bindings,
                        )
                    } else {
                        matches(&ec, &rec_canon[i], &mut out.bindings)
                    }
            });
            match found {
                Some(i) => {
                    used[i] = true;
                    out.matched += 1;
                    lines.push(DiffLine::new(Mark::Same, show(rec[i])));
                }
                // Whether a session gets `* n RECENT` depends on which one saw the message
                // first, and some servers send it less often: not compared (canon.rs).
                None if is_recent(e) => {
                    lines.push(DiffLine::new(
                        Mark::Same,
                        format!("{} (not sent this time; RECENT is not compared)", show(e)),
                    ));
                }
                None => {
                    out.missing += 1;
                    missing.push((lines.len(), (e, short)));
                    lines.push(DiffLine::new(Mark::Missing, show(e)));
                }
            }
        }
        // Each received response that matched nothing: beside the recorded one it most likely
        // stands for (same tag or `* n NAME`), with their difference; else at the end. Heads
        // are read once per line, so a large group pairs in linear time.
        let mut by_head: HashMap<Head, VecDeque<usize>> = HashMap::new();
        for (n, (_, (e, _))) in missing.iter().enumerate() {
            if let Some(h) = head_of(e) {
                by_head.entry(h).or_default().push_back(n);
            }
        }
        let mut paired: BTreeMap<usize, DiffLine> = BTreeMap::new();
        let mut unpaired = Vec::new();
        for (i, r) in rec.iter().enumerate() {
            if used[i] {
                continue;
            }
            let partner = head_of(r)
                .and_then(|h| by_head.get_mut(&h))
                .and_then(VecDeque::pop_front)
                .map(|n| missing[n]);
            // After the point the recording stopped, only what stands for a recorded
            // message that did not come is a difference.
            if cut_off.contains(&group) && partner.is_none() {
                lines.push(DiffLine::new(
                    Mark::Same,
                    format!("{} (after the recording ended)", show(r)),
                ));
                continue;
            }
            let untagged = r.starts_with(b"* ");
            if is_recent(r) {
                unpaired.push(DiffLine::new(
                    Mark::Same,
                    format!("{} (not recorded; RECENT is not compared)", show(r)),
                ));
                continue;
            }
            if extras == Extras::Allow && untagged {
                unpaired.push(DiffLine::new(
                    Mark::Same,
                    format!("{} (extra, allowed)", show(r)),
                ));
                continue;
            }
            out.extra += 1;
            let mut line = DiffLine::new(Mark::Extra, show(r));
            match partner {
                Some((at, (e, short))) => {
                    // One short line each: the pair itself says it all.
                    let long = |b: &[u8]| {
                        b.len() > LONG_LINE || b.iter().filter(|&&c| c == b'\n').count() > 1
                    };
                    // A recorded start is shown beside the received message cut the same
                    // way it was compared (see `closed_alike`).
                    let cut = short.then(|| closed_alike(e, r)).flatten();
                    let (e, r) = match &cut {
                        Some((e, r)) => (&e[..], &r[..]),
                        None => (e, *r),
                    };
                    let multi_line = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count() > 1;
                    if multi_line(e) || multi_line(r) {
                        line.detail = detail(e, r);
                    } else if (long(e) || long(r)) && !differs_where_shown(e, r) {
                        // One long line each, differing past what the summary shows: where
                        // they differ, without a hunk head.
                        let (a, b) =
                            region(&String::from_utf8_lossy(e), &String::from_utf8_lossy(r));
                        line.detail = vec![format!("-{a}"), format!("+{b}")];
                    }
                    paired.insert(at, line);
                }
                None => unpaired.push(line),
            }
        }
        if !paired.is_empty() {
            let mut merged = Vec::with_capacity(lines.len() + paired.len());
            for (at, line) in lines.into_iter().enumerate() {
                merged.push(line);
                merged.extend(paired.remove(&at));
            }
            lines = merged;
        }
        // Unmatched untagged lines came before the command's completion (a server answers
        // last): shown there, not after it.
        let untagged = |l: &DiffLine| l.text.starts_with("* ") || l.text.starts_with('+');
        let at = lines
            .iter()
            .position(|l| !untagged(l))
            .unwrap_or(lines.len());
        lines.splice(at..at, unpaired);
        out.groups.push(GroupReport {
            group,
            command: command.cloned(),
            lines,
            cut_off: cut_off.contains(&group),
        });
    }
    out
}

/// A message as pieces: whole lines, and literals (`true` when all their bytes are there).
enum Piece<'a> {
    Line(Vec<u8>),
    Literal(&'a [u8], bool),
}

fn pieces(bytes: &[u8]) -> Vec<Piece<'_>> {
    let mut framer = crate::protocol::framer::Framer::new(crate::protocol::Side::Server);
    let mut input = bytes;
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut literal: Option<usize> = None;
    let mut at = 0;
    while let Some(fragment) = framer.next(&mut input) {
        use crate::protocol::framer::Fragment;
        let taken = bytes.len() - input.len();
        match fragment {
            Fragment::Line { bytes: b, end } => {
                line.extend_from_slice(b);
                if end.is_some() {
                    out.push(Piece::Line(std::mem::take(&mut line)));
                }
            }
            Fragment::Literal { last, .. } => {
                let start = *literal.get_or_insert(at);
                if last {
                    out.push(Piece::Literal(&bytes[start..taken], true));
                    literal = None;
                }
            }
            Fragment::Opaque(_) => break,
        }
        at = taken;
    }
    if let Some(start) = literal {
        out.push(Piece::Literal(&bytes[start..], false));
    } else if !line.is_empty() {
        out.push(Piece::Line(line));
    }
    out
}

/// A recorded message cut short and a received one, made into two whole messages that compare
/// as the recording's start does: the received one cut where the recording stops (inside the
/// same literal, after as many of its bytes), each literal that was cut announcing the bytes
/// it kept, and both closed with `)`. Values a server mints (MODSEQ, dates) are then compared
/// as in any response. `None` when the received message has no such place (it is shorter, or
/// built otherwise).
fn closed_alike(recorded: &[u8], received: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (old, new) = (pieces(recorded), pieces(received));
    let last = old.len().checked_sub(1)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, (o, n)) in old.iter().zip(new.iter()).enumerate() {
        match (o, n) {
            (Piece::Line(o), Piece::Line(n)) if i == last && !o.ends_with(b"\n") => {
                a.extend_from_slice(o);
                b.extend_from_slice(n.get(..o.len())?);
            }
            (Piece::Line(o), Piece::Line(n)) => {
                // The literal this line announces is cut: it announces what is kept.
                let kept = match old.get(i + 1) {
                    Some(Piece::Literal(bytes, false)) => Some(bytes.len()),
                    _ => None,
                };
                a.extend_from_slice(&announcing(o, kept));
                b.extend_from_slice(&announcing(n, kept));
            }
            (Piece::Literal(o, whole), Piece::Literal(n, _)) => {
                a.extend_from_slice(o);
                b.extend_from_slice(if *whole { n } else { n.get(..o.len())? });
            }
            _ => return None,
        }
        if i == last {
            a.extend_from_slice(b")\r\n");
            b.extend_from_slice(b")\r\n");
            return Some((a, b));
        }
    }
    None
}

/// `line` (which may announce a literal), announcing `kept` bytes instead when given.
fn announcing(line: &[u8], kept: Option<usize>) -> Vec<u8> {
    let Some(kept) = kept else {
        return line.to_vec();
    };
    let body = line.trim_ascii_end();
    match body.iter().rposition(|&c| c == b'{') {
        Some(open) => {
            let mut out = body[..open].to_vec();
            out.extend_from_slice(format!("{{{kept}}}\r\n").as_bytes());
            out
        }
        None => line.to_vec(),
    }
}

/// The scope a command's responses are read in: the mailbox selected (a SELECT or EXAMINE
/// selects its own, which `selected` keeps for the commands after it; CLOSE and UNSELECT end
/// it) and the mailbox an APPEND, COPY or MOVE writes to.
fn scope_of(command: Option<&str>, selected: &mut Option<Vec<u8>>) -> Scope {
    let Some(command) = command else {
        return Scope {
            selected: selected.clone(),
            target: None,
        };
    };
    let bytes = command.as_bytes();
    let head = parse_command(bytes);
    let name = head
        .name
        .as_deref()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let args = head.args();
    let arg = |i: usize| {
        args.get(i)
            .map(|t| string_value(bytes, t).unwrap_or_else(|| bytes[t.span.clone()].to_vec()))
    };
    let mut target = None;
    match name.as_str() {
        "SELECT" | "EXAMINE" => *selected = arg(0),
        "CLOSE" | "UNSELECT" => *selected = None,
        "APPEND" => target = arg(0),
        // `parse_command` names the UID forms `UID COPY`, their arguments after both words.
        "COPY" | "MOVE" | "UID COPY" | "UID MOVE" => {
            target = args.len().checked_sub(1).and_then(arg)
        }
        _ => {}
    }
    Scope {
        selected: selected.clone(),
        target,
    }
}

/// `* n RECENT`.
fn is_recent(bytes: &[u8]) -> bool {
    let head = parse_response(bytes);
    head.is_untagged() && head.name.as_deref() == Some("RECENT")
}

/// What makes two responses the same kind of thing: the same tag and name, for FETCH the
/// same message, for an untagged status its response code (`* 3 FETCH`, `a1 OK`, `* OK
/// [UNSEEN]`; `* 2 EXISTS` and `* 3 EXISTS` alike; `* OK [UNSEEN 2]` is no `* OK
/// [PERMANENTFLAGS ...]`).
type Head = (String, Option<String>, Option<u64>, Option<String>);

fn head_of(bytes: &[u8]) -> Option<Head> {
    let h = parse_response(bytes);
    let tag = h.tag.as_deref()?.to_string();
    let name = h.name.as_deref().map(str::to_string);
    let number = h.number.filter(|_| name.as_deref() == Some("FETCH"));
    let code = h
        .code
        .filter(|_| tag == "*" && h.status.is_some())
        .map(|c| c.to_string());
    Some((tag, name, number, code))
}

/// Lines of context around each difference.
const CONTEXT: usize = 3;
/// A line longer than this is shown as the region where it differs.
const LONG_LINE: usize = 160;

/// The lines of `recorded` and `received` that differ, unified-diff style with a few lines of
/// context, long lines cut to the region that differs.
pub fn detail(recorded: &[u8], received: &[u8]) -> Vec<String> {
    let (old, new) = (
        String::from_utf8_lossy(recorded),
        String::from_utf8_lossy(received),
    );
    let diff = similar::TextDiff::configure()
        // A pathological pair of 100 MB bodies must not hold the report up.
        .timeout(Duration::from_secs(2))
        .diff_lines(&*old, &*new);
    let mut out = Vec::new();
    for group in diff.grouped_ops(CONTEXT) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let (o, n) = (first.old_range().start, first.new_range().start);
        let (oe, ne) = (last.old_range().end, last.new_range().end);
        out.push(format!("@@ -{},{} +{},{} @@", o + 1, oe - o, n + 1, ne - n));
        for op in &group {
            let changes: Vec<_> = diff.iter_changes(op).collect();
            // A line replaced by one line: both cut to where they differ.
            let (removed, added): (Vec<&similar::Change<&str>>, Vec<_>) = changes
                .iter()
                .filter(|c| c.tag() != similar::ChangeTag::Equal)
                .partition(|c| c.tag() == similar::ChangeTag::Delete);
            let pair = (removed.len() == 1 && added.len() == 1)
                .then(|| region(removed[0].value(), added[0].value()));
            for change in &changes {
                let text = change.value().trim_end_matches(['\r', '\n']);
                let line = match (change.tag(), &pair) {
                    (similar::ChangeTag::Equal, _) => format!(" {}", clip(text)),
                    (similar::ChangeTag::Delete, Some((r, _))) => format!("-{r}"),
                    (similar::ChangeTag::Insert, Some((_, a))) => format!("+{a}"),
                    (similar::ChangeTag::Delete, None) => format!("-{}", clip(text)),
                    (similar::ChangeTag::Insert, None) => format!("+{}", clip(text)),
                };
                out.push(line);
            }
        }
    }
    out
}

/// Whether two one-line messages differ within the part of them [`show`] prints: then the
/// pair of summaries says it all.
fn differs_where_shown(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    // `show` keeps 160 characters; a difference this far in is on screen with some context.
    same < 140
}

/// A line for a person: whole when short, else its start.
fn clip(line: &str) -> String {
    if line.chars().count() <= LONG_LINE {
        return line.to_string();
    }
    let mut s: String = line.chars().take(LONG_LINE).collect();
    s.push('…');
    s
}

/// Two versions of a long line, each cut to the region where they differ plus some context.
fn region(a: &str, b: &str) -> (String, String) {
    let (a, b) = (
        a.trim_end_matches(['\r', '\n']),
        b.trim_end_matches(['\r', '\n']),
    );
    if a.chars().count() <= LONG_LINE && b.chars().count() <= LONG_LINE {
        return (a.to_string(), b.to_string());
    }
    let (ac, bc): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let prefix = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let suffix = ac[prefix..]
        .iter()
        .rev()
        .zip(bc[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let cut = |c: &[char]| {
        let from = prefix.saturating_sub(40);
        let to = (c.len() - suffix + 40).min(c.len());
        let mut s = String::new();
        if from > 0 {
            s.push('…');
        }
        s.extend(&c[from..to.min(from + 2 * LONG_LINE)]);
        if to < c.len() || to > from + 2 * LONG_LINE {
            s.push('…');
        }
        s
    };
    (cut(&ac), cut(&bc))
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }

    /// The unified diff: `C:` lines, recorded (`-`) vs received (`+`), unchanged (` `), the
    /// first divergence marked, then the variable bindings.
    pub fn render(&self, verbose: bool) -> String {
        self.render_sent(verbose, None)
    }

    /// [`Comparison::render`] for a run that stopped after sending `sent` commands: the
    /// commands after them are counted in one line, not listed response by response.
    pub fn render_sent(&self, verbose: bool, sent: Option<usize>) -> String {
        self.render_folded(verbose, sent, &mut ShownDifferences::default(), "")
    }

    /// [`Comparison::render_sent`] for one session of several (`name`): a difference already
    /// shown for an earlier session, word for word but for the tags, is named in one line.
    /// A server that lacks a capability differs in every session's greeting, CAPABILITY and
    /// LOGIN alike; shown once, the differences that are this session's own stand out.
    pub fn render_folded(
        &self,
        verbose: bool,
        sent: Option<usize>,
        shown: &mut ShownDifferences,
        name: &str,
    ) -> String {
        let mut s = String::new();
        let mut first_marked = false;
        let unsent =
            |g: &GroupReport| matches!((g.group, sent), (Group::Command(i), Some(n)) if i >= n);
        let (mut unsent_commands, mut unsent_responses) = (0, 0);
        for g in &self.groups {
            if unsent(g) {
                unsent_commands += 1;
                unsent_responses += g.lines.iter().filter(|l| l.mark == Mark::Missing).count();
                continue;
            }
            let differs = g.differs();
            if !differs && !verbose {
                if let Some(c) = &g.command {
                    let compared = g
                        .lines
                        .iter()
                        .filter(|l| !l.text.ends_with("(after the recording ended)"))
                        .count();
                    if g.cut_off {
                        // Not a match of everything: the recording has no answer to compare.
                        let _ = writeln!(
                            s,
                            "  C: {c}    ({}; the recording ended before its completion, so \
                             nothing after that was compared)",
                            responses_match(compared)
                        );
                    } else {
                        let _ = writeln!(s, "  C: {c}    ({})", responses_match(compared));
                    }
                }
                continue;
            }
            let head = match (&g.command, g.group) {
                (Some(c), _) => format!("  C: {c}"),
                (None, Group::Greeting) => "  (greeting)".to_string(),
                (None, _) => String::new(),
            };
            if differs && let Some(first) = shown.first_shown(g, name) {
                let head = if head.is_empty() {
                    "  (unsolicited)"
                } else {
                    &head
                };
                let _ = writeln!(s, "{head}    (differs as in {first}, shown above)");
                continue;
            }
            if !head.is_empty() {
                let _ = writeln!(s, "{head}");
            }
            for line in &g.lines {
                let mark = match line.mark {
                    Mark::Same => ' ',
                    Mark::Missing => '-',
                    Mark::Extra => '+',
                };
                if line.mark != Mark::Same && !first_marked {
                    first_marked = true;
                    let _ = writeln!(s, "  vvv first difference (- recorded, + received)");
                }
                let _ = writeln!(s, "{mark} S: {}", line.text);
                for d in &line.detail {
                    let _ = writeln!(s, "      {d}");
                }
            }
        }
        if unsent_commands > 0 {
            let _ = writeln!(
                s,
                "  … the run stopped before sending the {unsent_commands} later command(s) \
                 ({unsent_responses} recorded responses not compared)"
            );
        }
        let bindings = self.bindings.describe();
        if !bindings.is_empty() {
            let _ = writeln!(s, "  bindings: {}", bindings.join(", "));
        }
        s
    }
}

/// The differences shown so far in one run, each with the session it was shown for.
#[derive(Debug, Default)]
pub struct ShownDifferences {
    first: HashMap<String, String>,
}

impl ShownDifferences {
    /// The session `g`'s difference was shown for already, if another; else notes it as
    /// `name`'s. Tags do not count: each session numbers its commands its own way.
    fn first_shown(&mut self, g: &GroupReport, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        let tag = g
            .command
            .as_deref()
            .and_then(|c| c.split_once(' '))
            .map(|(tag, _)| tag);
        let untagged = |text: &str| -> String {
            match tag.and_then(|t| text.strip_prefix(t)) {
                Some(rest) if rest.starts_with(' ') => format!("<tag>{rest}"),
                _ => text.to_string(),
            }
        };
        let mut key = format!("{:?}", std::mem::discriminant(&g.group));
        if let Some(c) = &g.command {
            key.push('\n');
            key.push_str(&untagged(c));
        }
        // Only what differs: lines that matched may still read otherwise from run to run
        // (a completion's timings, a RECENT count), and do not make another difference.
        for line in g.lines.iter().filter(|l| l.mark != Mark::Same) {
            let _ = write!(key, "\n{:?} {}", line.mark, untagged(&line.text));
            for d in &line.detail {
                let _ = write!(key, "\n  {d}");
            }
        }
        match self.first.get(&key) {
            Some(first) if first != name => Some(first.clone()),
            Some(_) => None,
            None => {
                self.first.insert(key, name.to_string());
                None
            }
        }
    }
}

fn responses_match(n: usize) -> String {
    match n {
        1 => "1 response matches".into(),
        n => format!("{n} responses match"),
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

    /// `compare` with nothing cut off or cut short, extras forbidden.
    fn compared(
        commands: &BTreeMap<Group, String>,
        expected: &[(Group, Vec<u8>)],
        received: &[(Group, Vec<u8>)],
    ) -> Comparison {
        let none = BTreeSet::new();
        compare(
            commands,
            &none,
            expected,
            &BTreeSet::new(),
            received,
            Extras::Forbid,
        )
    }

    #[test]
    fn says_no_and_shows_where() {
        let none = BTreeSet::new();
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
        let c = compare(
            &commands,
            &none,
            &expected,
            &BTreeSet::new(),
            &received,
            Extras::Forbid,
        );
        assert!(!c.ok());
        assert_eq!((c.matched, c.missing, c.extra), (2, 1, 1));
        let text = c.render(false);
        assert!(text.contains("- S: * 2 EXISTS"), "{text}");
        assert!(text.contains("+ S: * 3 EXISTS"), "{text}");
        assert!(text.contains("first difference"), "{text}");
        assert!(text.contains("UIDVALIDITY of INBOX 5 -> 9"), "{text}");
        // The differing pair stands together.
        assert!(
            text.contains("- S: * 2 EXISTS\n+ S: * 3 EXISTS\n"),
            "{text}"
        );
        let same = compare(
            &commands,
            &none,
            &expected,
            &BTreeSet::new(),
            &expected,
            Extras::Forbid,
        );
        assert!(same.ok());
    }

    #[test]
    fn copyuid_after_uid_move_is_bound_to_the_destination() {
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a1 SELECT Work".to_string());
        commands.insert(Group::Command(1), "a2 UID MOVE 2 Lists/Rust".to_string());
        commands.insert(Group::Command(2), "a3 SELECT Lists/Rust".to_string());
        let (select, moved, again) = (Group::Command(0), Group::Command(1), Group::Command(2));
        let expected = vec![
            (select, b"* OK [UIDVALIDITY 5] x\r\n".to_vec()),
            (select, b"a1 OK done\r\n".to_vec()),
            (moved, b"* OK [COPYUID 7 2 2] Moved\r\n".to_vec()),
            (moved, b"a2 OK done\r\n".to_vec()),
            (again, b"* OK [UIDVALIDITY 7] x\r\n".to_vec()),
            (again, b"a3 OK done\r\n".to_vec()),
        ];
        let mut received = expected.clone();
        received[0].1 = b"* OK [UIDVALIDITY 50] x\r\n".to_vec();
        received[2].1 = b"* OK [COPYUID 70 2 2] Moved\r\n".to_vec();
        received[4].1 = b"* OK [UIDVALIDITY 70] x\r\n".to_vec();
        let c = compared(&commands, &expected, &received);
        assert!(c.ok(), "{}", c.render(false));
        // The destination's UIDVALIDITY in COPYUID is checked against its SELECT.
        received[2].1 = b"* OK [COPYUID 1111 2 2] Moved\r\n".to_vec();
        let c = compared(&commands, &expected, &received);
        assert!(!c.ok(), "{}", c.render(false));
        assert!(
            c.bindings
                .describe()
                .iter()
                .any(|b| b.contains("Lists/Rust")),
            "{}",
            c.render(false)
        );
    }

    #[test]
    fn a_recent_sent_or_not_is_no_difference() {
        let commands = BTreeMap::new();
        let g = Group::Command(0);
        let expected = vec![
            (g, b"* 2 EXISTS\r\n".to_vec()),
            (g, b"* 2 RECENT\r\n".to_vec()),
            (g, b"a1 OK done\r\n".to_vec()),
        ];
        let received = vec![
            (g, b"* 2 EXISTS\r\n".to_vec()),
            (g, b"a1 OK done\r\n".to_vec()),
        ];
        let c = compared(&commands, &expected, &received);
        assert!(c.ok(), "{}", c.render(true));
        let c = compared(&commands, &received, &expected);
        assert!(c.ok(), "{}", c.render(true));
    }

    #[test]
    fn extra_untagged_can_be_allowed() {
        let none = BTreeSet::new();
        let commands = BTreeMap::new();
        let g = Group::Command(0);
        let expected = vec![(g, b"a1 OK done\r\n".to_vec())];
        let received = vec![
            (g, b"* OK Still here\r\n".to_vec()),
            (g, b"a1 OK done\r\n".to_vec()),
        ];
        assert!(
            !compare(
                &commands,
                &none,
                &expected,
                &BTreeSet::new(),
                &received,
                Extras::Forbid
            )
            .ok()
        );
        assert!(
            compare(
                &commands,
                &none,
                &expected,
                &BTreeSet::new(),
                &received,
                Extras::Allow
            )
            .ok()
        );
    }

    /// A server that differs alike in every session (a capability it lacks) has the
    /// difference shown once, whatever each session's tags; a session's own difference is
    /// shown in full.
    #[test]
    fn a_difference_repeated_in_later_sessions_is_named_not_shown_again() {
        let session = |tag: &str, received_caps: &str, exists: &str| {
            let mut commands = BTreeMap::new();
            commands.insert(Group::Command(0), format!("{tag} CAPABILITY"));
            commands.insert(Group::Command(1), format!("{tag}2 SELECT INBOX"));
            let (c, s) = (Group::Command(0), Group::Command(1));
            let expected = vec![
                (c, b"* CAPABILITY IMAP4rev1 IDLE MOVE\r\n".to_vec()),
                (c, format!("{tag} OK done\r\n").into_bytes()),
                (s, b"* 3 EXISTS\r\n".to_vec()),
                (s, format!("{tag}2 OK done\r\n").into_bytes()),
            ];
            let received = vec![
                (c, format!("* CAPABILITY {received_caps}\r\n").into_bytes()),
                // Texts of matching lines may read otherwise in each session (timings).
                (c, format!("{tag} OK done in 0.{tag}01 s\r\n").into_bytes()),
                (s, format!("* {exists} EXISTS\r\n").into_bytes()),
                (s, format!("{tag}2 OK done\r\n").into_bytes()),
            ];
            compared(&commands, &expected, &received)
        };
        let mut shown = ShownDifferences::default();
        let first =
            session("a", "IMAP4rev1 IDLE", "3").render_folded(false, None, &mut shown, "one");
        assert!(
            first.contains("- S: * CAPABILITY IMAP4rev1 IDLE MOVE"),
            "{first}"
        );
        let second =
            session("b", "IMAP4rev1 IDLE", "4").render_folded(false, None, &mut shown, "two");
        assert!(
            second.contains("  C: b CAPABILITY    (differs as in one, shown above)\n"),
            "{second}"
        );
        assert!(!second.contains("* CAPABILITY"), "{second}");
        // This session's own difference, in full, marked as the first one shown.
        assert!(second.contains("vvv first difference"), "{second}");
        assert!(second.contains("+ S: * 4 EXISTS"), "{second}");
        // Another capability difference is another difference.
        let third = session("c", "IMAP4rev1", "3").render_folded(false, None, &mut shown, "three");
        assert!(third.contains("+ S: * CAPABILITY IMAP4rev1\n"), "{third}");
        // One report alone is shown in full.
        let alone = session("a", "IMAP4rev1 IDLE", "3").render(false);
        assert!(
            alone.contains("- S: * CAPABILITY IMAP4rev1 IDLE MOVE"),
            "{alone}"
        );
    }

    /// Two one-line responses that differ where the summary shows it are shown once, as the
    /// pair; differing only far along, the region where they differ is added.
    #[test]
    fn a_long_line_is_detailed_only_where_the_summary_does_not_show_the_difference() {
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a1 CAPABILITY".to_string());
        let g = Group::Command(0);
        let caps = |first: &str, last: &str| {
            let middle: Vec<String> = (0..40).map(|i| format!("X-CAP{i}")).collect();
            format!("* CAPABILITY {first} {} {last}\r\n", middle.join(" ")).into_bytes()
        };
        let early = compared(
            &commands,
            &[(g, caps("IMAP4rev1", "IDLE")), (g, b"a1 OK\r\n".to_vec())],
            &[(g, caps("IMAP4rev2", "IDLE")), (g, b"a1 OK\r\n".to_vec())],
        );
        let extra = early.groups[0]
            .lines
            .iter()
            .find(|l| l.mark == Mark::Extra)
            .unwrap();
        assert!(extra.detail.is_empty(), "{}", early.render(false));
        let late = compared(
            &commands,
            &[(g, caps("IMAP4rev1", "IDLE")), (g, b"a1 OK\r\n".to_vec())],
            &[(g, caps("IMAP4rev1", "MOVE")), (g, b"a1 OK\r\n".to_vec())],
        );
        let extra = late.groups[0]
            .lines
            .iter()
            .find(|l| l.mark == Mark::Extra)
            .unwrap();
        assert_eq!(extra.detail.len(), 2, "{}", late.render(false));
        assert!(extra.detail[1].contains("MOVE"), "{:?}", extra.detail);
        assert!(!extra.detail[0].starts_with("@@"), "{:?}", extra.detail);
    }

    #[test]
    fn a_changed_line_in_a_message_body_is_shown_as_such() {
        let none = BTreeSet::new();
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a3 FETCH 1 BODY[]".to_string());
        let g = Group::Command(0);
        let body = |subject: &str| {
            let msg = format!(
                "From: nell@example.com\r\nTo: bob@example.com\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nLine one\r\nLine two\r\nLine three\r\n"
            );
            format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{msg})\r\n", msg.len()).into_bytes()
        };
        let expected = vec![
            (g, body("Lunch on Friday")),
            (g, b"a3 OK done\r\n".to_vec()),
        ];
        let received = vec![
            (g, body("Lunch on Monday")),
            (g, b"a3 OK done\r\n".to_vec()),
        ];
        let c = compare(
            &commands,
            &none,
            &expected,
            &BTreeSet::new(),
            &received,
            Extras::Forbid,
        );
        assert_eq!((c.matched, c.missing, c.extra), (1, 1, 1));
        let text = c.render(false);
        assert!(text.contains("      -Subject: Lunch on Friday\n"), "{text}");
        assert!(text.contains("      +Subject: Lunch on Monday\n"), "{text}");
        assert!(text.contains("       To: bob@example.com\n"), "{text}");
        let json = serde_json::to_string(&c.groups).unwrap();
        assert!(json.contains("+Subject: Lunch on Monday"), "{json}");
    }

    #[test]
    fn a_long_line_is_cut_to_where_it_differs() {
        let a = format!("{}OLD{}", "x".repeat(500), "y".repeat(500));
        let b = format!("{}NEW{}", "x".repeat(500), "y".repeat(500));
        let lines = detail(
            format!("h\r\n{a}\r\n").as_bytes(),
            format!("h\r\n{b}\r\n").as_bytes(),
        );
        let removed = lines.iter().find(|l| l.starts_with('-')).unwrap();
        assert!(removed.contains("OLD") && removed.len() < 200, "{removed}");
        assert!(removed.starts_with("-…"), "{removed}");
    }

    #[test]
    fn a_command_the_recording_stopped_inside_checks_what_it_has() {
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a4 IDLE".to_string());
        let g = Group::Command(0);
        let cut = BTreeSet::from([g]);
        let expected = vec![(g, b"+ idling\r\n".to_vec())];
        // The server went on (a push, the completion after the client's DONE-less close).
        let received = vec![
            (g, b"+ idling\r\n".to_vec()),
            (g, b"* 4 EXISTS\r\n".to_vec()),
        ];
        let c = compare(
            &commands,
            &cut,
            &expected,
            &BTreeSet::new(),
            &received,
            Extras::Forbid,
        );
        assert!(c.ok(), "{}", c.render(true));
        // What the recording has must still arrive.
        let c = compare(
            &commands,
            &cut,
            &expected,
            &BTreeSet::new(),
            &[],
            Extras::Forbid,
        );
        assert_eq!(c.missing, 1);
    }

    #[test]
    fn a_message_the_recording_has_only_the_start_of_matches_by_its_start() {
        let mut commands = BTreeMap::new();
        commands.insert(Group::Command(0), "a3 UID FETCH 5 BODY.PEEK[]".to_string());
        let g = Group::Command(0);
        let cut = BTreeSet::from([g]);
        let body = "Subject: big\r\n\r\n".to_string() + &"line of text\r\n".repeat(400);
        let whole = |modseq: &str, body: &str| {
            format!(
                "* 5 FETCH (UID 5 MODSEQ ({modseq}) BODY[] {{{}}}\r\n{body})\r\n",
                body.len()
            )
            .into_bytes()
        };
        let recorded = whole("7", &body)[..1000].to_vec();
        let expected = vec![(g, recorded)];
        let short = BTreeSet::from([0]);
        // The whole message now, with a MODSEQ one digit longer: the start still matches.
        let received = vec![(g, whole("12", &body))];
        let c = compare(
            &commands,
            &cut,
            &expected,
            &short,
            &received,
            Extras::Forbid,
        );
        assert!(c.ok(), "{}", c.render(true));
        // A different body does not.
        let other = body.replace("line of text", "line of TEXT");
        let received = vec![(g, whole("12", &other))];
        let c = compare(
            &commands,
            &cut,
            &expected,
            &short,
            &received,
            Extras::Forbid,
        );
        assert!(!c.ok());
        // Without the mark, a start is not the whole message.
        let received = vec![(g, whole("7", &body))];
        let c = compare(
            &commands,
            &BTreeSet::new(),
            &expected,
            &BTreeSet::new(),
            &received,
            Extras::Forbid,
        );
        assert!(!c.ok());
    }
}
