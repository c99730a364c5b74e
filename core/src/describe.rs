//! Wording shared by every message that describes bad input: the JSON type of a value
//! (`must be a string, not a number`) and a bounded quote of user text.

use serde_json::Value;

/// The JSON type of `value`, with its article: `a string`, `an array`, `null`.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text`, cut to at most `limit` characters (on a character boundary) with `…` appended
/// when it was longer, so a message never echoes megabytes of input.
pub fn quote(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_read_as_phrases() {
        assert_eq!(json_kind(&json!(null)), "null");
        assert_eq!(json_kind(&json!(1)), "a number");
        assert_eq!(json_kind(&json!({})), "an object");
        assert_eq!(json_kind(&json!([])), "an array");
    }

    #[test]
    fn quotes_are_bounded_on_character_boundaries() {
        assert_eq!(quote("short", 10), "short");
        assert_eq!(quote("ééééé", 3), "ééé…");
        assert_eq!(quote("abc", 3), "abc");
    }
}
