//! The JSON-lines front end behind `helo classify`: one greeting per input line, one verdict
//! per output line.
//!
//! Input: `{"helo": "...", "verb": "EHLO", "client_ip": "...", "rcpt": "a@b", "client_rdns": "..."}`
//! where `verb` (default `EHLO`), `rcpt` (a string or a list of strings) and `client_rdns` are
//! optional and unknown keys are ignored.
//!
//! Output: `{"verdict": "reject", "rule": "...", "reply": "...", "scope": "helo"|"client",
//! "observations": [...]}`; an accepted greeting has only `verdict` and `observations`.
//! A line that cannot be read gets `{"error": "..."}` and the next line is processed, so output
//! line N always answers input line N.

use std::io::{self, BufRead, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::input::{GreetingFacts, Verb};
use super::rules::Classifier;
use super::verdict::{Classification, Verdict};

#[derive(Deserialize)]
struct InputLine {
    helo: String,
    #[serde(default)]
    verb: Option<String>,
    client_ip: String,
    #[serde(default)]
    rcpt: Option<OneOrMany>,
    #[serde(default)]
    client_rdns: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize)]
struct OutputLine<'a> {
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    observations: Vec<&'static str>,
}

#[derive(Serialize)]
struct ErrorLine {
    error: String,
}

impl<'a> OutputLine<'a> {
    fn from_classification(c: &'a Classification) -> Self {
        let observations = c.observations.iter().map(|o| o.as_str()).collect();
        match &c.verdict {
            Verdict::Accept => OutputLine { verdict: "accept", rule: None, reply: None, scope: None, observations },
            Verdict::Reject(r) => OutputLine {
                verdict: "reject",
                rule: Some(r.rule.as_str()),
                reply: Some(&r.reply),
                scope: Some(r.scope.as_str()),
                observations,
            },
        }
    }
}

/// Classifies one JSON line, or says why it could not.
fn classify_line(classifier: &Classifier, line: &[u8]) -> Result<Classification, String> {
    let input: InputLine = serde_json::from_slice(line).map_err(|e| format!("invalid input line: {e}"))?;
    let verb = match input.verb.as_deref() {
        None => Verb::Ehlo,
        Some(v) => Verb::parse(v).ok_or_else(|| format!("invalid verb {v:?}: expected HELO or EHLO"))?,
    };
    let client_ip: IpAddr = input.client_ip.trim().parse().map_err(|_| format!("invalid client_ip {:?}", input.client_ip))?;
    let rcpt_owned: Vec<String> = match input.rcpt {
        None => Vec::new(),
        Some(OneOrMany::One(r)) => vec![r],
        Some(OneOrMany::Many(rs)) => rs,
    };
    let rcpt: Vec<&str> = rcpt_owned.iter().map(String::as_str).collect();
    let greeting = GreetingFacts::new(verb, input.helo.as_bytes(), client_ip).with_rcpt(&rcpt).with_rdns(input.client_rdns.as_deref());
    Ok(classifier.classify(&greeting))
}

/// Reads JSON lines from `input` until it ends, writing one JSON line per input line to `output`
/// (flushed after each, so an interactive caller gets each answer at once). Only I/O errors stop
/// it.
pub fn run_jsonl(classifier: &Classifier, mut input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let written = match classify_line(classifier, text) {
            Ok(c) => serde_json::to_writer(&mut output, &OutputLine::from_classification(&c)),
            Err(error) => serde_json::to_writer(&mut output, &ErrorLine { error }),
        };
        written.map_err(io::Error::other)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}
