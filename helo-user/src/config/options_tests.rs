//! The option table against the command line clap builds from it: every config key has a flag and
//! every flag a key, except those meant otherwise; every `[default: X]` a help text states is the
//! default the table gives; flags lay over the file's values as documented.

use std::collections::BTreeSet;

use clap::{CommandFactory, Parser};
use serde::de::{self, Deserializer, Visitor};

use super::Config;
use crate::cli::{Cli, Command};

/// Keys of the config file with no flag: tuning and tables, set in the file only.
const FILE_ONLY: [&str; 8] = [
    "max-errors",
    "learned-per-source-per-hour",
    "max-commands-before-greeting",
    "stress-percent",
    "helo-capacity",
    "timeouts",
    "ladder",
    "classifier",
];

/// Flags of `helo run` that are not a top-level key: the file itself, and the one flag into a table.
const FLAG_ONLY: [&str; 2] = ["config", "command-timeout-s"];

/// The keys `Config` reads, as serde derived them (the names `deny_unknown_fields` accepts).
fn config_keys() -> BTreeSet<String> {
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = <Config as serde::Deserialize>::deserialize(&mut fields);
    fields.0.expect("Config is a struct").iter().map(|s| s.to_string()).collect()
}

/// A subcommand's own flags (long names), with their help texts.
fn flags(sub: &str) -> Vec<(String, String)> {
    let cli = Cli::command();
    let cmd = cli.find_subcommand(sub).expect("subcommand");
    cmd.get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_help().map(|h| h.to_string()).unwrap_or_default())))
        .filter(|(long, _)| long != "help")
        .collect()
}

#[test]
fn every_key_has_a_flag_and_every_flag_a_key_unless_meant_otherwise() {
    let keys = config_keys();
    let run: BTreeSet<String> = flags("run").into_iter().map(|(l, _)| l).collect();
    let no_flag: Vec<&str> = keys.iter().filter(|k| !run.contains(*k)).map(String::as_str).collect();
    let mut file_only = FILE_ONLY.to_vec();
    file_only.sort();
    assert_eq!(no_flag, file_only, "keys without a `helo run` flag (add a flag, or to FILE_ONLY)");
    let no_key: Vec<&String> = run.iter().filter(|f| !keys.contains(*f)).collect();
    let mut expected: Vec<&str> = FLAG_ONLY.to_vec();
    expected.sort();
    assert_eq!(no_key, expected, "`helo run` flags that are no config key");
    let classify: BTreeSet<String> = flags("classify").into_iter().map(|(l, _)| l).collect();
    assert_eq!(classify, ["config", "domain", "hostname", "server-ip"].map(String::from).into(), "classify takes the server facts");
}

/// Flags whose stated default is words, not a value the flag takes.
const DEFAULT_IN_WORDS: [&str; 4] = ["listen", "public-suffix-list", "fleet-name", "reply-footer"];

#[test]
fn every_default_a_help_text_states_is_the_tables() {
    let base = ["helo", "run", "--iface", "eth9", "--hostname", "mx.example.net"];
    let config = |extra: &[&str]| -> Config {
        match Cli::try_parse_from(base.iter().chain(extra)).unwrap_or_else(|e| panic!("{extra:?}: {e}")).command {
            Command::Run(args) => args.config().unwrap_or_else(|e| panic!("{extra:?}: {e:#}")),
            _ => unreachable!(),
        }
    };
    let expected = toml::to_string(&config(&[])).unwrap();
    let mut checked = 0;
    for (long, help) in flags("run") {
        let Some((_, rest)) = help.split_once("[default: ") else { continue };
        if DEFAULT_IN_WORDS.contains(&long.as_str()) {
            continue;
        }
        let stated = rest.split_once(']').expect("a closing bracket").0;
        let flag = format!("--{long}");
        let given = toml::to_string(&config(&[flag.as_str(), stated])).unwrap();
        assert_eq!(given, expected, "--{long}'s help says [default: {stated}], the table says otherwise");
        checked += 1;
    }
    assert!(checked >= 19, "only {checked} stated defaults checked");
}

#[test]
fn flags_lay_over_the_files_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("helo.toml");
    std::fs::write(
        &file,
        "iface = \"eth1\"\nhostname = \"file.example\"\nserver-ip = [\"198.18.0.1\"]\ndomain = [\"file.example\"]\n\
         listen = [\"198.18.0.1:25\"]\nport = [25, 587]\nmax-sessions = 7\nfleet = \"redis://r:6379\"\n\
         [timeouts]\ncommand-s = \"2m\"\nreply-s = 60\n",
    )
    .unwrap();
    let parse = |args: &[&str]| -> Config {
        let path = file.to_str().unwrap();
        match Cli::try_parse_from(["helo", "run", "--config", path].iter().chain(args)).unwrap().command {
            Command::Run(args) => args.config().unwrap(),
            _ => unreachable!(),
        }
    };
    let from_file = parse(&[]);
    assert_eq!((from_file.hostname(), from_file.max_sessions, from_file.timeouts.command_s), ("file.example", 7, 120));
    assert_eq!(from_file.ports, [25, 587]);
    let c = parse(&[
        "--hostname",
        "flag.example",
        "--server-ip",
        "198.18.0.2",
        "--server-ip",
        "198.18.0.3",
        "--port",
        "2525",
        "--max-sessions",
        "9",
        "--command-timeout-s",
        "30s",
        "--helo-ttl-s",
        "2d",
        "--metrics",
        "off",
    ]);
    assert_eq!(c.hostname(), "flag.example", "a flag wins over the file");
    assert_eq!(
        c.server_ip,
        ["198.18.0.2".parse::<std::net::IpAddr>().unwrap(), "198.18.0.3".parse().unwrap()],
        "a repeated flag replaces the list"
    );
    assert_eq!(c.domain, ["file.example"], "a list no flag names stays the file's");
    assert_eq!(c.ports, [2525]);
    assert_eq!((c.max_sessions, c.timeouts.command_s, c.timeouts.reply_s, c.helo_ttl_s), (9, 30, 60, 172_800));
    assert_eq!(c.metrics.0, None);
    assert_eq!((c.iface.as_deref(), c.fleet.as_deref()), (Some("eth1"), Some("redis://r:6379")), "unset flags keep the file's");
    assert_eq!(c.listen, ["198.18.0.1:25".parse::<std::net::SocketAddr>().unwrap()]);
}

#[test]
fn flag_errors_read_as_before() {
    let err = |args: &[&str]| -> String {
        match Cli::try_parse_from(["helo", "run"].iter().chain(args)) {
            Err(e) => e.to_string(),
            Ok(cli) => match cli.command {
                Command::Run(args) => args.config().map(|_| String::new()).unwrap_or_else(|e| e.to_string()),
                _ => unreachable!(),
            },
        }
    };
    assert!(err(&["--no-xdp", "--iface", "eth1"]).contains("cannot be used with"), "{}", err(&["--no-xdp", "--iface", "eth1"]));
    assert_eq!(err(&["--hostname", "h"]), "--iface is required (or `iface` in the config file), unless --no-xdp");
    assert_eq!(err(&["--no-xdp"]), "hostname is required (--hostname or `hostname` in the config file)");
    assert!(err(&["--no-xdp", "--hostname", "h", "--metrics", "nowhere"]).contains("\"nowhere\" is neither ADDR:PORT nor off"));
    assert!(err(&["--no-xdp", "--hostname", "h", "--xdp-mode", "fast"]).contains("invalid value 'fast'"));
    assert_eq!(err(&["--no-xdp", "--hostname", "h", "--max-sessions", "0"]), "max-sessions and max-sessions-per-source must be above 0");
}
