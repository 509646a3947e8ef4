//! Tool definitions, `tool_choice` and structured-output settings, mapped both ways
//! (protocols.md §3.1 and §3.6 rows `tools`, `tool_choice`, `parallel_tool_calls`,
//! `response_format` / `output_config.format`).

use serde_json::{json, Map, Value};

use super::error::ConvertError;

/// OpenAI `tools`, `tool_choice`, `parallel_tool_calls` → Anthropic `tools`, `tool_choice`
/// (`required` → `any`, named function → `tool`, `parallel_tool_calls: false` →
/// `disable_parallel_tool_use`). No `tool_choice` is sent when there are no tools.
pub fn tools_to_anthropic(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ConvertError> {
    let tools = req.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty());
    let Some(tools) = tools else { return Ok(()) };
    let mut converted = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        if tool.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
            return Err(ConvertError::bad_param(param, "only `function` tools are supported by this model's backend"));
        }
        let f = tool.get("function").ok_or_else(|| ConvertError::bad_param(&param, "`function` is required"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::bad_param(&param, "`function.name` is required"))?;
        let schema = f
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut t = json!({"name": name, "input_schema": schema});
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            t["description"] = json!(d);
        }
        converted.push(t);
    }
    out.insert("tools".into(), Value::Array(converted));

    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(ConvertError::bad_param(
                    "tool_choice",
                    format!("unsupported `tool_choice` value `{other}`"),
                ))
            }
        }),
        Some(obj) => {
            let name = obj.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            let name = name.filter(|_| obj.get("type").and_then(Value::as_str) == Some("function"));
            let name = name.ok_or_else(|| {
                ConvertError::bad_param(
                    "tool_choice",
                    "only `{type: function, function: {name}}` objects are supported",
                )
            })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}

/// `response_format`: json_schema → `output_config.format`; json_object → returns a system
/// instruction to append; text → nothing.
pub fn response_format_to_anthropic(
    req: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<Option<&'static str>, ConvertError> {
    let Some(rf) = req.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some("Respond with a single valid JSON object and nothing else.")),
        Some("json_schema") => {
            let schema = rf.get("json_schema").and_then(|s| s.get("schema")).filter(|s| s.is_object());
            let schema =
                schema.ok_or_else(|| ConvertError::bad_param("response_format", "`json_schema.schema` is required"))?;
            out.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": schema}}));
            Ok(None)
        }
        _ => Err(ConvertError::bad_param("response_format", "unsupported `response_format` type")),
    }
}

/// Anthropic `tools`, `tool_choice` → OpenAI `tools`, `tool_choice`, `parallel_tool_calls`.
/// Server tools (any `type` other than `custom`) are rejected.
pub fn tools_to_openai(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ConvertError> {
    let Some(tools) = req.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let mut converted = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str).is_some_and(|ty| ty != "custom") {
            return Err(ConvertError::bad_param(param, "server tools are not supported by this model's backend"));
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::bad_param(&param, "`name` is required"))?;
        let schema = t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut f = json!({"name": name, "parameters": schema});
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f["description"] = json!(d);
        }
        converted.push(json!({"type": "function", "function": f}));
    }
    out.insert("tools".into(), Value::Array(converted));
    let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ConvertError::bad_param("tool_choice", "`name` is required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(ConvertError::bad_param("tool_choice", "unsupported `tool_choice` type")),
    };
    out.insert("tool_choice".into(), mapped);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

/// `output_config.format` (structured outputs) → `response_format: json_schema`.
pub fn output_format_to_openai(req: &Map<String, Value>, out: &mut Map<String, Value>) {
    let format = req.get("output_config").and_then(|c| c.get("format"));
    if let Some(schema) = format.filter(|f| f["type"] == "json_schema").and_then(|f| f.get("schema")) {
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
        );
    }
}
