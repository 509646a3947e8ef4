//! Content-part helpers shared by both request translators: image and document sources
//! (data URIs ⇄ base64 sources, URLs ⇄ url sources) and flattening text parts to a string.

use serde_json::{json, Value};

use super::error::ConvertError;

/// Image media types Anthropic accepts in a base64 source.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// An OpenAI `image_url.url` (or `file.file_data`) → an Anthropic block. A `data:` URI becomes a
/// base64 `image` (or a `document` for PDF); an http(s) URL becomes a `url` image source.
pub fn image_block_from_url(url: &str, param: &str) -> Result<Value, ConvertError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| ConvertError::bad_param(param, "malformed data URI"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| ConvertError::bad_param(param, "only base64 data URIs are supported"))?;
        let media_type = media_type.to_ascii_lowercase();
        let source = json!({"type": "base64", "media_type": media_type, "data": data});
        if media_type == "application/pdf" {
            return Ok(json!({"type": "document", "source": source}));
        }
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            return Err(ConvertError::bad_param(
                param,
                format!("media type `{media_type}` is not supported (jpeg, png, gif, webp, pdf)"),
            ));
        }
        return Ok(json!({"type": "image", "source": source}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(ConvertError::bad_param(param, "image URL must be an http(s) URL or a base64 data URI"))
}

/// An Anthropic `source` (base64 or url) → the URL string OpenAI expects in `image_url.url`.
pub fn url_from_source(source: Option<&Value>, param: &str) -> Result<String, ConvertError> {
    let source = source.ok_or_else(|| ConvertError::bad_param(param, "`source` is required"))?;
    let field = |k: &str| source.get(k).and_then(Value::as_str);
    match field("type") {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media_type), Some(data)) => Ok(format!("data:{media_type};base64,{data}")),
            _ => Err(ConvertError::bad_param(param, "base64 source needs `media_type` and `data`")),
        },
        Some("url") => {
            field("url").map(str::to_owned).ok_or_else(|| ConvertError::bad_param(param, "url source needs `url`"))
        }
        _ => Err(ConvertError::bad_param(param, "only base64 and url sources are supported")),
    }
}

/// An array of `{type: "text", text}` parts as one string (parts joined with `\n`, empty parts
/// skipped). Any non-text part is an error naming `param`.
pub fn text_of_part_list(parts: &[Value], param: &str) -> Result<String, ConvertError> {
    let mut texts = Vec::new();
    for part in parts {
        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(t)) => {
                if !t.is_empty() {
                    texts.push(t);
                }
            }
            _ => return Err(ConvertError::bad_param(param, "only text parts are supported here")),
        }
    }
    Ok(texts.join("\n"))
}

/// The error for text content that is neither a string nor an array of parts.
pub fn not_text(param: &str) -> ConvertError {
    ConvertError::bad_param(param, "content must be a string or an array of text parts")
}
