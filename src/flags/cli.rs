//! `switchyard flags eval`: evaluate flags from a definitions file, one case or JSON Lines on stdin.

use crate::flags::{CompiledFlags, EvalInput, Evaluation, FlagDefinitions};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::io::{BufRead, Write};

/// Arguments of `switchyard flags eval` (see the contract).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EvalArgs {
    /// A file in the shape of PostHog's flag-definitions response.
    #[arg(long)]
    pub flags: std::path::PathBuf,
    /// Flag key to evaluate (with --distinct-id); without both, JSON Lines are read from stdin.
    #[arg(long)]
    pub flag: Option<String>,
    #[arg(long)]
    pub distinct_id: Option<String>,
    /// Person properties, a JSON object.
    #[arg(long)]
    pub person_properties: Option<String>,
    /// Groups, a JSON object of group type name → group key.
    #[arg(long)]
    pub groups: Option<String>,
    /// Group properties, a JSON object of group type name → properties.
    #[arg(long)]
    pub group_properties: Option<String>,
    /// Device id, for flags bucketed by device.
    #[arg(long)]
    pub device_id: Option<String>,
    /// The clock for relative dates (RFC 3339); default: the current time.
    #[arg(long)]
    pub now: Option<String>,
}

/// One case to evaluate, owned.
struct Case {
    flag: String,
    distinct_id: String,
    device_id: Option<String>,
    person_properties: Map<String, Value>,
    groups: Map<String, Value>,
    group_properties: Map<String, Value>,
}

fn object(v: Option<Value>, what: &str) -> Result<Map<String, Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(format!("`{what}` must be a JSON object")),
    }
}

fn parse_object_arg(s: Option<&str>, what: &str) -> Result<Map<String, Value>, String> {
    let v = s.map(serde_json::from_str::<Value>).transpose().map_err(|e| format!("--{what} is not JSON: {e}"))?;
    object(v, what)
}

fn case_from_line(line: &str) -> Result<Case, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut o) = v else {
        return Err("a line must be a JSON object".to_owned());
    };
    let text = |o: &mut Map<String, Value>, k: &str, required: bool| -> Result<Option<String>, String> {
        match o.remove(k) {
            Some(Value::String(s)) => Ok(Some(s)),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("`{k}` is required")),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    Ok(Case {
        flag: text(&mut o, "flag", true)?.unwrap_or_default(),
        distinct_id: text(&mut o, "distinct_id", true)?.unwrap_or_default(),
        device_id: text(&mut o, "device_id", false)?,
        person_properties: object(o.remove("person_properties"), "person_properties")?,
        groups: object(o.remove("groups"), "groups")?,
        group_properties: object(o.remove("group_properties"), "group_properties")?,
    })
}

fn evaluate(flags: &CompiledFlags, case: &Case, now: DateTime<Utc>) -> Evaluation {
    let input = EvalInput {
        distinct_id: &case.distinct_id,
        device_id: case.device_id.as_deref(),
        person_properties: &case.person_properties,
        groups: &case.groups,
        group_properties: &case.group_properties,
        now,
    };
    flags.evaluate(&case.flag, &input)
}

/// `{"flag", "distinct_id", "value", "payload", "reason"}` in that order.
fn render(case: &Case, e: &Evaluation) -> String {
    let s = |v: &Value| serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned());
    let value = e.value.as_ref().map_or(Value::Null, |v| v.to_json());
    let payload = e.payload.as_deref().map_or_else(|| "null".to_owned(), s);
    format!(
        "{{\"flag\":{},\"distinct_id\":{},\"value\":{},\"payload\":{},\"reason\":{}}}",
        s(&Value::from(case.flag.as_str())),
        s(&Value::from(case.distinct_id.as_str())),
        s(&value),
        payload,
        s(&Value::from(e.reason.as_ref())),
    )
}

/// Runs `flags eval`; returns an error message for a fatal problem (unreadable file, bad argument).
pub fn run(args: &EvalArgs, stdin: impl BufRead, mut stdout: impl Write) -> Result<(), String> {
    let bytes = std::fs::read(&args.flags).map_err(|e| format!("{}: {e}", args.flags.display()))?;
    let defs = FlagDefinitions::from_slice(&bytes).map_err(|e| format!("{}: {e}", args.flags.display()))?;
    let flags = CompiledFlags::compile(&defs);
    let now = match &args.now {
        Some(s) => DateTime::parse_from_rfc3339(s).map_err(|e| format!("--now {s:?}: {e}"))?.with_timezone(&Utc),
        None => Utc::now(),
    };
    let io = |e: std::io::Error| format!("writing output: {e}");
    match (&args.flag, &args.distinct_id) {
        (Some(flag), Some(distinct_id)) => {
            let case = Case {
                flag: flag.clone(),
                distinct_id: distinct_id.clone(),
                device_id: args.device_id.clone(),
                person_properties: parse_object_arg(args.person_properties.as_deref(), "person-properties")?,
                groups: parse_object_arg(args.groups.as_deref(), "groups")?,
                group_properties: parse_object_arg(args.group_properties.as_deref(), "group-properties")?,
            };
            writeln!(stdout, "{}", render(&case, &evaluate(&flags, &case, now))).map_err(io)?;
        }
        (None, None) => {
            for (n, line) in stdin.lines().enumerate() {
                let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let out = match case_from_line(&line) {
                    Ok(case) => render(&case, &evaluate(&flags, &case, now)),
                    Err(e) => {
                        let err = serde_json::json!({"error": e, "line": n + 1});
                        serde_json::to_string(&err).unwrap_or_default()
                    }
                };
                writeln!(stdout, "{out}").map_err(io)?;
            }
        }
        _ => return Err("--flag and --distinct-id must be given together".to_owned()),
    }
    stdout.flush().map_err(io)
}
