//! `{{ … }}` placeholders in `run`, `env` and `cwd` strings.
//!
//! A placeholder is a dotted path into the step context: `{{ input.x }}`,
//! `{{ steps.build.output.sha }}`, `{{ execution.id }}`. Array elements are addressed by a
//! numeric segment (`{{ steps.list.output.items.0 }}`). Whitespace inside the braces is
//! ignored. Rendering inserts strings as they are and any other JSON value in its compact
//! JSON form.
//!
//! Syntax, precisely:
//! - a placeholder starts at `{{` and ends at the first `}}` after it;
//! - between the braces, optional whitespace, a path, optional whitespace;
//! - a path is one or more segments separated by `.`, each segment made of ASCII letters,
//!   digits, `_` and `-`;
//! - a lone `{`, `}` or `}}` outside a placeholder is literal text.
//!
//! This module only knows the syntax and how to look a path up in a JSON document; which
//! roots a pipeline may name (`input`, `execution`, `steps`) is checked by the pipeline
//! validation.

use std::fmt;
use std::ops::Range;

use serde_json::Value;

/// How much of an offending text an error message quotes before cutting it short.
const QUOTE_LIMIT: usize = 60;

/// One placeholder found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The path segments, e.g. `["steps", "build", "output", "sha"]`.
    pub path: Vec<String>,
    /// Byte range of the whole `{{ … }}` in the string.
    pub span: Range<usize>,
}

impl Placeholder {
    /// The path joined with dots, e.g. `steps.build.output.sha`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

impl fmt::Display for Placeholder {
    /// The placeholder in its normal written form, `{{ steps.build.output.sha }}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{{ {} }}}}", self.dotted())
    }
}

/// Finds every placeholder in `text`.
///
/// # Errors
/// A message for an unterminated `{{`, an empty placeholder or a malformed path.
pub fn placeholders(text: &str) -> Result<Vec<Placeholder>, String> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(offset) = text[pos..].find("{{") {
        let start = pos + offset;
        let inner_start = start + 2;
        let Some(close) = text[inner_start..].find("}}") else {
            return Err(format!(
                "unterminated placeholder `{}`: missing the closing `}}}}`",
                quote(&text[start..])
            ));
        };
        let end = inner_start + close + 2;
        let inner = &text[inner_start..inner_start + close];
        let path = parse_path(inner, &text[start..end])?;
        found.push(Placeholder { path, span: start..end });
        pos = end;
    }
    Ok(found)
}

/// Replaces every placeholder in `text` with its value from `context`.
///
/// # Errors
/// A message naming the first placeholder that does not resolve.
pub fn render(text: &str, context: &Value) -> Result<String, String> {
    let found = placeholders(text)?;
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for placeholder in &found {
        out.push_str(&text[pos..placeholder.span.start]);
        let value = resolve(context, &placeholder.path)
            .map_err(|why| format!("placeholder `{placeholder}` does not resolve: {why}"))?;
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        pos = placeholder.span.end;
    }
    out.push_str(&text[pos..]);
    Ok(out)
}

/// Checks the text between the braces and splits it into segments. `whole` is the full
/// `{{ … }}` text, quoted in messages.
fn parse_path(inner: &str, whole: &str) -> Result<Vec<String>, String> {
    let trimmed = inner.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "empty placeholder `{}`: expected a path such as `input.name`",
            quote(whole)
        ));
    }
    let mut path = Vec::new();
    for segment in trimmed.split('.') {
        if segment.is_empty() {
            return Err(format!(
                "malformed placeholder `{}`: the path has an empty segment",
                quote(whole)
            ));
        }
        if !segment.chars().all(is_segment_char) {
            return Err(format!(
                "malformed placeholder `{}`: `{}` is not a path segment \
                 (use letters, digits, `_` and `-`, separated by `.`)",
                quote(whole),
                quote(segment)
            ));
        }
        path.push(segment.to_string());
    }
    Ok(path)
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Looks `path` up in `context`: objects by key, arrays by numeric index.
fn resolve<'a>(context: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut current = context;
    for (depth, segment) in path.iter().enumerate() {
        current = match current {
            Value::Object(map) => {
                map.get(segment.as_str()).ok_or_else(|| format!("`{segment}` not found"))?
            }
            Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    format!("`{segment}` is not an index into an array of {} elements", items.len())
                })?;
                items.get(index).ok_or_else(|| {
                    format!(
                        "index `{segment}` is out of range (the array has {} elements)",
                        items.len()
                    )
                })?
            }
            other => {
                let parent = if depth == 0 {
                    "the context".to_string()
                } else {
                    format!("`{}`", path[..depth].join("."))
                };
                return Err(format!("`{segment}` not found: {parent} is {}", kind_of(other)));
            }
        };
    }
    Ok(current)
}

use crate::describe::json_kind as kind_of;

fn quote(text: &str) -> String {
    crate::describe::quote(text, QUOTE_LIMIT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(text: &str) -> Vec<String> {
        placeholders(text).unwrap().iter().map(Placeholder::dotted).collect()
    }

    #[test]
    fn finds_placeholders_with_or_without_spaces() {
        assert_eq!(paths("{{input.x}}"), ["input.x"]);
        assert_eq!(
            paths("a {{  steps.build.output.sha }} b {{\texecution.id\t}}"),
            ["steps.build.output.sha", "execution.id"]
        );
        assert_eq!(paths("{{ input.items.0 }}"), ["input.items.0"]);
        assert_eq!(paths("{{ a-b.c_d.E9 }}"), ["a-b.c_d.E9"]);
        assert_eq!(paths("{{ input }}"), ["input"]);
    }

    #[test]
    fn spans_cover_the_braces() {
        let text = "x={{ input.x }}, y={{input.y}}";
        let found = placeholders(text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(&text[found[0].span.clone()], "{{ input.x }}");
        assert_eq!(&text[found[1].span.clone()], "{{input.y}}");
        assert_eq!(found[0].path, ["input", "x"]);
        assert_eq!(found[0].to_string(), "{{ input.x }}");
    }

    #[test]
    fn lone_braces_are_literal() {
        assert!(paths("").is_empty());
        assert!(paths("no placeholders").is_empty());
        assert!(paths("}} and { and } and {x}").is_empty());
        assert!(paths("awk '{print $1}'").is_empty());
        assert_eq!(paths("}}{{ input.x }}}}"), ["input.x"]);
    }

    #[test]
    fn refuses_unterminated_placeholders() {
        let err = placeholders("echo {{ input.x").unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
        assert!(err.contains("`{{ input.x`"), "{err}");
        assert!(placeholders("{{").unwrap_err().contains("unterminated"));
        assert!(placeholders("{{ input.x }").unwrap_err().contains("unterminated"));
        assert!(placeholders("{{ a }} {{ b").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn refuses_empty_placeholders() {
        for text in ["{{}}", "{{ }}", "x {{ \t }} y"] {
            let err = placeholders(text).unwrap_err();
            assert!(err.starts_with("empty placeholder"), "{text}: {err}");
        }
    }

    #[test]
    fn refuses_malformed_paths_quoting_them() {
        let err = placeholders("{{ input..x }}").unwrap_err();
        assert!(err.contains("malformed placeholder `{{ input..x }}`"), "{err}");
        assert!(err.contains("empty segment"), "{err}");
        assert!(placeholders("{{ .input }}").unwrap_err().contains("empty segment"));
        assert!(placeholders("{{ input. }}").unwrap_err().contains("empty segment"));
        let err = placeholders("{{ input.a b }}").unwrap_err();
        assert!(err.contains("`a b` is not a path segment"), "{err}");
        assert!(placeholders("{{ input.é }}").unwrap_err().contains("`é`"));
        assert!(placeholders("{{ input.x | upper }}").is_err());
        assert!(placeholders("{{{ input.x }}}").is_err());
        assert!(placeholders("{{ {{ input.x }}").is_err());
    }

    #[test]
    fn long_offending_text_is_cut_short() {
        let text = format!("{{{{ {}", "é".repeat(1000));
        let err = placeholders(&text).unwrap_err();
        assert!(err.len() < 300, "{err}");
        assert!(err.contains('…'));
    }

    fn context() -> Value {
        json!({
            "execution": { "id": "ex1", "run": 2, "target": null },
            "input": { "x": "hello world", "n": 3, "flag": true, "list": ["a", {"b": 1}] },
            "steps": { "build": { "status": "succeeded", "output": { "sha": "abc123" } } },
        })
    }

    #[test]
    fn renders_strings_raw_and_other_values_as_json() {
        let ctx = context();
        assert_eq!(render("echo {{ input.x }}!", &ctx).unwrap(), "echo hello world!");
        assert_eq!(render("{{ steps.build.output.sha }}", &ctx).unwrap(), "abc123");
        assert_eq!(render("n={{input.n}} f={{ input.flag }}", &ctx).unwrap(), "n=3 f=true");
        assert_eq!(render("{{ execution.target }}", &ctx).unwrap(), "null");
        assert_eq!(render("{{ input.list }}", &ctx).unwrap(), r#"["a",{"b":1}]"#);
        assert_eq!(render("{{ input.list.0 }}{{ input.list.1.b }}", &ctx).unwrap(), "a1");
        assert_eq!(render("{{ steps.build.output }}", &ctx).unwrap(), r#"{"sha":"abc123"}"#);
    }

    #[test]
    fn renders_text_without_placeholders_unchanged() {
        let ctx = context();
        assert_eq!(render("", &ctx).unwrap(), "");
        assert_eq!(render("awk '{print $1}' }}", &ctx).unwrap(), "awk '{print $1}' }}");
        assert_eq!(render("ünïcode {{ input.x }} ✓", &ctx).unwrap(), "ünïcode hello world ✓");
    }

    #[test]
    fn inserted_values_are_not_rendered_again() {
        let ctx = json!({ "input": { "x": "{{ input.y }}" } });
        assert_eq!(render("{{ input.x }}", &ctx).unwrap(), "{{ input.y }}");
    }

    #[test]
    fn unresolved_paths_name_the_placeholder() {
        let ctx = context();
        assert_eq!(
            render("{{steps.build.output.sha2}}", &ctx).unwrap_err(),
            "placeholder `{{ steps.build.output.sha2 }}` does not resolve: `sha2` not found"
        );
        let err = render("{{ steps.deploy.output }}", &ctx).unwrap_err();
        assert!(err.ends_with("`deploy` not found"), "{err}");
        let err = render("{{ input.list.7 }}", &ctx).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = render("{{ input.list.first }}", &ctx).unwrap_err();
        assert!(err.contains("not an index"), "{err}");
        let err = render("{{ input.x.y }}", &ctx).unwrap_err();
        assert!(err.contains("`input.x` is a string"), "{err}");
        let err = render("{{ a }}", &json!(null)).unwrap_err();
        assert!(err.contains("the context is null"), "{err}");
    }

    #[test]
    fn render_reports_syntax_errors() {
        assert!(render("{{ input.x", &context()).unwrap_err().contains("unterminated"));
    }

    #[test]
    fn random_text_never_panics_and_spans_are_consistent() {
        // A small deterministic generator; enough to shake out slicing mistakes.
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let alphabet: Vec<char> = "{{}} .ax_-0é\t$".chars().collect();
        let ctx = json!({ "a": { "x": ["é", 1] }, "ax": null });
        for _ in 0..20_000 {
            let len = next() % 16;
            let text: String = (0..len).map(|_| alphabet[next() % alphabet.len()]).collect();
            if let Ok(found) = placeholders(&text) {
                let mut last = 0;
                for p in &found {
                    assert!(p.span.start >= last && text[p.span.clone()].starts_with("{{"));
                    assert!(text[p.span.clone()].ends_with("}}"));
                    last = p.span.end;
                }
            }
            let _ = render(&text, &ctx);
        }
    }
}
