//! The HELO classifier: decides whether an SMTP greeting is acceptable, for the agent and for the
//! `helo classify` command alike.
//!
//! Pure and stateless: no I/O, no clock, no DNS. Whatever the verdict needs (the client's rDNS
//! name, RCPT addresses) is passed in by the caller. An EHLO after STARTTLS, or a second HELO, is
//! classified as a greeting of its own.
//!
//! - [`input`]: the greeting and what is known about its sender;
//! - [`config`]: the operator's configuration (TOML or JSON);
//! - [`rules`]: the compiled [`Classifier`] and the order its rules run in;
//! - [`verdict`]: verdicts, rule ids, scopes and observations;
//! - [`name`], [`literal`], [`dynamic`]: host-name syntax, address literals, IP-embedding names;
//! - [`suffixes`]: the Public Suffix List in use (the system's, a configured file, or compiled in);
//! - [`jsonl`]: the JSON-lines front end.

pub mod config;
pub mod dynamic;
pub mod input;
pub mod jsonl;
pub mod literal;
pub mod live;
pub mod name;
pub mod normal;
pub mod rules;
pub mod suffixes;
pub mod verdict;

#[cfg(test)]
mod tests;

pub use config::{ClassifierConfig, ConfigError, ConfigFormat};
pub use input::{GreetingFacts, Verb};
pub use jsonl::run_jsonl;
pub use live::LiveClassifier;
pub use rules::Classifier;
pub use verdict::{BogusReason, Classification, ObservationKind, Observations, Rejection, RuleId, Scope, Verdict};
