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

/// How much of a field name a path quotes.
const KEY_LIMIT: usize = 60;

/// The path of field `key` of the object at `parent` (`""` for the top): `parent.key`, or
/// `parent["key"]` (the key as a JSON string) when `key` is not a plain name: empty, or with
/// characters other than letters, digits, `_` and `-`. So every path names one field, even
/// `""` (which would otherwise read as the object itself) or a key holding control
/// characters; a long key is cut as [`quote`] cuts it.
pub fn field_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let key = quote(key, KEY_LIMIT);
    if !plain {
        let quoted = serde_json::to_string(&key).unwrap_or_else(|_| "\"\"".to_string());
        format!("{parent}[{quoted}]")
    } else if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
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
    fn field_paths_name_one_field_whatever_the_key() {
        assert_eq!(field_path("", "name"), "name");
        assert_eq!(field_path("steps[0]", "run"), "steps[0].run");
        assert_eq!(field_path("", "größe_2-x"), "größe_2-x");
        // Found by schemathesis: an empty key read as the body itself.
        assert_eq!(field_path("", ""), r#"[""]"#);
        assert_eq!(field_path("input", "a.b"), r#"input["a.b"]"#);
        assert_eq!(field_path("", "\u{10}x"), r#"["\u0010x"]"#);
        let long = "k".repeat(1000);
        assert_eq!(field_path("", &long), format!("{}…", "k".repeat(60)));
    }

    #[test]
    fn quotes_are_bounded_on_character_boundaries() {
        assert_eq!(quote("short", 10), "short");
        assert_eq!(quote("ééééé", 3), "ééé…");
        assert_eq!(quote("abc", 3), "abc");
    }
}
