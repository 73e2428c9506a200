//! `--config FILE`: the same options as the command line, in YAML, for a DaemonSet's ConfigMap
//! or a systemd unit.
//!
//! The file's keys are the subcommand's long flags (`exe`, `capture-bytes`, `otlp-endpoint`,
//! …); a list gives a repeatable flag several values, `true` turns a switch on. An `env` map
//! sets environment variables the agent reads (`OTEL_TRACES_SAMPLER`, …).
//!
//! Precedence is flag > environment > file: a flag given on the command line wins over the
//! file's value for it, a variable already set wins over the file's `env` entry, and a flag
//! with an environment counterpart (`exporter` and `OTEL_TRACES_EXPORTER`, …) is taken from the
//! file only when the counterpart is unset.
//!
//! The file is turned into the flags it stands for and parsed by clap with the command line, so
//! one parser checks every value, whichever place it came from.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use serde_yaml_ng::Value;

use crate::cli::Cli;

/// Flags whose value the agent otherwise takes from these variables: the file's value must not
/// beat a variable the user set.
const ENV_COUNTERPARTS: &[(&str, &[&str])] = &[
    ("exporter", &["OTEL_TRACES_EXPORTER"]),
    ("otlp-endpoint", &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]),
    ("otlp-protocol", &["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]),
];

/// The file's key for environment variables.
const ENV_KEY: &str = "env";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are in the message, not `source` fields: the binary prints the whole chain.
    #[error("config {path}: cannot read it: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config {path}: not valid YAML: {error}")]
    Yaml { path: PathBuf, error: serde_yaml_ng::Error },
    #[error("config {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// The parsed command line, with `--config FILE` applied. Errors in the command line itself
/// exit as clap does (usage, exit 2); errors in the file are returned.
pub fn parse() -> Result<Cli, ConfigError> {
    parse_from(std::env::args_os().collect(), &|name| std::env::var_os(name).filter(|v| !v.is_empty()).is_some(), &|name, value| {
        // SAFETY: called from `main` before anything else runs: the process has one thread,
        // so nothing can read the environment while it changes.
        unsafe { std::env::set_var(name, value) }
    })
}

/// `parse` with the environment passed in, for tests: `is_set` says whether a variable is set,
/// `set` sets one.
fn parse_from(args: Vec<OsString>, is_set: &dyn Fn(&str) -> bool, set: &dyn Fn(&str, &str)) -> Result<Cli, ConfigError> {
    let command = Cli::command();
    let matches = command.clone().get_matches_from(&args);
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()));
    };
    let Some(path) = sub.get_one::<PathBuf>("config").cloned() else {
        return Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()));
    };
    let invalid = |what: String| ConfigError::Invalid { path: path.clone(), what };
    let file = load(&path)?;
    let subcommand = command.find_subcommand(name).expect("clap matched this subcommand");
    let mut flags = Vec::new();
    let mut env = Vec::new();
    for (key, value) in file {
        if key == ENV_KEY {
            env = env_entries(&value).map_err(invalid)?;
            continue;
        }
        flags.extend(flags_for(subcommand, sub, &key, &value, is_set).map_err(invalid)?);
    }
    // Variables first checked, then set: a flag's counterpart set by this same file's `env`
    // does not hide the flag.
    for (name, value) in env.iter().filter(|(name, _)| !is_set(name)) {
        set(name, value);
    }
    let mut all = args;
    all.extend(flags);
    let matches = command.try_get_matches_from(all).map_err(|e| invalid(clap_line(&e)))?;
    Cli::from_arg_matches(&matches).map_err(|e| invalid(clap_line(&e)))
}

/// The file as (key, value) pairs in its order.
fn load(path: &Path) -> Result<Vec<(String, Value)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|error| ConfigError::Yaml { path: path.to_path_buf(), error })?;
    let invalid = |what: &str| ConfigError::Invalid { path: path.to_path_buf(), what: what.to_string() };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(map) => map
            .into_iter()
            .map(|(key, value)| match key {
                Value::String(key) => Ok((key, value)),
                _ => Err(invalid("every key must be a flag's name, e.g. `capture-bytes: 512`")),
            })
            .collect(),
        _ => Err(invalid("the file must be a map of flag names to values, e.g. `exe: [nginx]`")),
    }
}

/// The flags one entry of the file stands for: none when the command line (or the flag's
/// environment counterpart) already decides it.
fn flags_for(subcommand: &clap::Command, given: &ArgMatches, key: &str, value: &Value, is_set: &dyn Fn(&str) -> bool) -> Result<Vec<OsString>, String> {
    let Some(arg) = subcommand.get_arguments().find(|a| a.get_long() == Some(key) && key != "config") else {
        let hint = if key.contains('_') { format!(" (did you mean `{}`?)", key.replace('_', "-")) } else { String::new() };
        return Err(format!("unknown key `{key}`{hint}: keys are the long flags of `zerotrace {}` (see --help), and `{ENV_KEY}`", subcommand.get_name()));
    };
    if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
        return Ok(Vec::new());
    }
    let counterparts = ENV_COUNTERPARTS.iter().find(|(flag, _)| *flag == key).map_or(&[][..], |(_, vars)| *vars);
    if counterparts.iter().any(|var| is_set(var)) {
        return Ok(Vec::new());
    }
    let flag = OsString::from(format!("--{key}"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, Value::Bool(true)) => Ok(vec![flag]),
        (ArgAction::SetTrue, Value::Bool(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err(format!("`{key}` is a switch: give it true or false")),
        (ArgAction::Append, Value::Sequence(items)) => {
            let mut flags = Vec::new();
            for item in items {
                flags.push(flag.clone());
                flags.push(scalar(key, item)?.into());
            }
            Ok(flags)
        }
        (_, Value::Sequence(_)) => Err(format!("`{key}` takes one value, not a list")),
        (_, value) => Ok(vec![flag, scalar(key, value)?.into()]),
    }
}

/// A value as the command line would spell it.
fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("`{key}` needs a string, a number or a list of them")),
    }
}

/// The `env` map as (variable, value) pairs.
fn env_entries(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Mapping(map) = value else {
        return Err(format!("`{ENV_KEY}` must be a map of variables to values, e.g. `OTEL_TRACES_SAMPLER: traceidratio`"));
    };
    map.iter()
        .map(|(name, value)| match (name, scalar(ENV_KEY, value)) {
            (Value::String(name), Ok(value)) if !name.is_empty() && !name.contains('=') => Ok((name.clone(), value)),
            _ => Err(format!("`{ENV_KEY}`: each entry must be NAME: value, e.g. `OTEL_TRACES_SAMPLER: traceidratio`")),
        })
        .collect()
}

/// clap's message for one bad value, on one line, without its usage block.
fn clap_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("invalid value");
    first.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::RefCell;

    use super::*;
    use crate::cli::{Command, Exporter};

    /// Parse `args` with `--config` pointing at `yaml`; `env` holds the variables set.
    fn parse_with(args: &[&str], yaml: &str, env: &[&str]) -> (Result<Cli, ConfigError>, Vec<(String, String)>) {
        let path = std::env::temp_dir().join(format!("zerotrace-config-{}-{:?}.yaml", std::process::id(), std::thread::current().id()));
        std::fs::write(&path, yaml).unwrap();
        let mut all: Vec<OsString> = ["zerotrace", "run"].iter().map(OsString::from).collect();
        all.extend(args.iter().map(OsString::from));
        all.extend([OsString::from("--config"), path.clone().into()]);
        let set = RefCell::new(Vec::new());
        let result = parse_from(all, &|name| env.contains(&name), &|name, value| set.borrow_mut().push((name.to_string(), value.to_string())));
        std::fs::remove_file(&path).unwrap();
        (result, set.into_inner())
    }

    fn run_args(cli: Cli) -> crate::cli::RunArgs {
        match cli.command {
            Command::Run(args) => args,
            Command::Compare(_) => panic!("parsed as compare"),
        }
    }

    #[test]
    fn the_file_gives_flags_lists_switches_and_environment() {
        let yaml = "exe: [nginx, 'python3*']\ncapture-bytes: 512\nkeep-sql-literals: true\nlist: false\nexporter: otlp\nenv:\n  OTEL_TRACES_SAMPLER: traceidratio\n  OTEL_TRACES_SAMPLER_ARG: 0.25\n";
        let (cli, env) = parse_with(&[], yaml, &[]);
        let args = run_args(cli.unwrap());
        assert_eq!(args.trace.exe, ["nginx", "python3*"]);
        assert_eq!(args.trace.capture_bytes, 512);
        assert!(args.trace.keep_sql_literals && !args.trace.list);
        assert_eq!(args.exporter, Some(Exporter::Otlp));
        assert_eq!(env, [("OTEL_TRACES_SAMPLER".to_string(), "traceidratio".to_string()), ("OTEL_TRACES_SAMPLER_ARG".to_string(), "0.25".to_string())]);
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let yaml = "exe: [nginx]\ncapture-bytes: 512\nexporter: otlp\nenv:\n  OTEL_TRACES_SAMPLER: always_off\n";
        let (cli, env) = parse_with(&["--capture-bytes", "64", "--exe", "redis-server"], yaml, &["OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER"]);
        let args = run_args(cli.unwrap());
        assert_eq!(args.trace.capture_bytes, 64, "the flag wins");
        assert_eq!(args.trace.exe, ["redis-server"], "a repeatable flag given replaces the file's list");
        assert_eq!(args.exporter, None, "OTEL_TRACES_EXPORTER is set: the file's exporter is not used");
        assert!(env.is_empty(), "a variable already set is kept: {env:?}");
    }

    #[test]
    fn a_bad_key_or_value_is_one_line_naming_it() {
        let error = |yaml: &str| parse_with(&[], yaml, &[]).0.err().unwrap().to_string();
        let e = error("capture_bytes: 64\n");
        assert!(e.contains("unknown key `capture_bytes` (did you mean `capture-bytes`?)"), "{e}");
        assert!(error("config: other.yaml\n").contains("unknown key `config`"));
        let e = error("capture-bytes: 99999\n");
        assert!(e.contains("99999") && e.contains("--capture-bytes") && !e.contains('\n'), "{e}");
        assert!(error("keep-sql-literals: yes please\n").contains("`keep-sql-literals` is a switch"));
        assert!(error("duration: [1, 2]\n").contains("`duration` takes one value"));
        assert!(error("- exe\n").contains("must be a map"));
        assert!(error("exe: [\n").contains("not valid YAML"));
        assert!(error("env: [A]\n").contains("`env` must be a map"));
    }

    #[test]
    fn no_config_flag_parses_the_command_line_alone() {
        let args = ["zerotrace", "run", "--exe", "nginx"].iter().map(OsString::from).collect();
        let cli = parse_from(args, &|_| false, &|_, _| panic!("no file, no variables set")).unwrap();
        assert_eq!(run_args(cli).trace.exe, ["nginx"]);
    }
}
