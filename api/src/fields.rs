//! Field-by-field checking of JSON request bodies that reports every problem at once.
//!
//! A [`Fields`] walks one JSON object: each accessor reads a field, checks it, and records a
//! [`Problem`] naming the field (`payload.run[0]`) when it is wrong; unknown fields are
//! problems too. `null` reads as "absent", so clients may send `"target": null`. Nothing
//! here panics, whatever the input.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::{Map, Value};
use sluice_core::Problem;

pub(crate) use sluice_core::describe::json_kind as kind_of;

/// `parent.key`, or `key` at the top (`parent["key"]` for a key that is not a plain name;
/// see [`sluice_core::describe::field_path`]).
pub(crate) use sluice_core::describe::field_path as path;

/// A checker over one JSON object; problems accumulate in a shared list.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Fields<'a> {
    /// A checker over `value` found at `at` (`""` for the body itself); records a problem
    /// and returns `None` when it is not an object.
    pub(crate) fn object(value: &'a Value, at: &str, problems: &mut Vec<Problem>) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                map,
                at: at.to_string(),
            }),
            other => {
                let what = if at.is_empty() {
                    "the request body"
                } else {
                    "it"
                };
                let message = format!("{what} must be a JSON object, not {}", kind_of(other));
                problems.push(Problem::new(at, message));
                None
            }
        }
    }

    /// The path of field `key`.
    pub(crate) fn path(&self, key: &str) -> String {
        path(&self.at, key)
    }

    /// Reports every field not in `known`.
    pub(crate) fn only(&self, known: &[&str], problems: &mut Vec<Problem>) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                problems.push(Problem::new(
                    self.path(key),
                    format!("unknown field; expected one of {}", known.join(", ")),
                ));
            }
        }
    }

    /// Every field, in key order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> + use<'a> {
        self.map.iter()
    }

    /// The value of `key`; `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string field of `chars` characters (counted as Unicode scalar values), without
    /// control characters when `plain`.
    pub(crate) fn string(
        &self,
        key: &str,
        chars: RangeInclusive<usize>,
        plain: bool,
        problems: &mut Vec<Problem>,
    ) -> Option<&'a str> {
        let value = self.get(key)?;
        let Some(text) = value.as_str() else {
            problems.push(Problem::new(
                self.path(key),
                format!("must be a string, not {}", kind_of(value)),
            ));
            return None;
        };
        let count = text.chars().count();
        if !chars.contains(&count) {
            let message = if count == 0 {
                "must not be empty".to_string()
            } else {
                format!(
                    "must have at most {} characters (it has {count})",
                    chars.end()
                )
            };
            problems.push(Problem::new(self.path(key), message));
            return None;
        }
        if plain && text.chars().any(char::is_control) {
            problems.push(Problem::new(
                self.path(key),
                "must not contain control characters",
            ));
            return None;
        }
        Some(text)
    }

    /// A string field that must be present.
    pub(crate) fn required_string(
        &self,
        key: &str,
        chars: RangeInclusive<usize>,
        plain: bool,
        problems: &mut Vec<Problem>,
    ) -> Option<&'a str> {
        if self.get(key).is_none() {
            problems.push(Problem::new(self.path(key), "is required"));
            return None;
        }
        self.string(key, chars, plain, problems)
    }

    /// An integer field within `range`.
    pub(crate) fn integer(
        &self,
        key: &str,
        range: RangeInclusive<i64>,
        problems: &mut Vec<Problem>,
    ) -> Option<i64> {
        let value = self.get(key)?;
        let Some(n) = value.as_i64() else {
            let message = match value {
                Value::Number(_) => "must be a whole number".to_string(),
                other => format!("must be an integer, not {}", kind_of(other)),
            };
            problems.push(Problem::new(self.path(key), message));
            return None;
        };
        if !range.contains(&n) {
            problems.push(Problem::new(
                self.path(key),
                format!(
                    "must be between {} and {} (it is {n})",
                    range.start(),
                    range.end()
                ),
            ));
            return None;
        }
        Some(n)
    }

    /// A boolean field.
    pub(crate) fn boolean(&self, key: &str, problems: &mut Vec<Problem>) -> Option<bool> {
        let value = self.get(key)?;
        if let Some(b) = value.as_bool() {
            return Some(b);
        }
        problems.push(Problem::new(
            self.path(key),
            format!("must be true or false, not {}", kind_of(value)),
        ));
        None
    }

    /// A duration field written like `10s`, `5m`, `1h30m`.
    pub(crate) fn duration(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
        let value = self.get(key)?;
        let Some(text) = value.as_str() else {
            problems.push(Problem::new(
                self.path(key),
                format!(
                    "must be a duration string such as `30s` or `5m`, not {}",
                    kind_of(value)
                ),
            ));
            return None;
        };
        match sluice_core::duration::parse(text) {
            Ok(d) => Some(d),
            Err(message) => {
                problems.push(Problem::new(self.path(key), message));
                None
            }
        }
    }
}

/// The fields named by `problems`, in order (for tests).
#[cfg(test)]
pub(crate) fn problem_fields(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let body = json!({"a": 5, "b": "", "c": 1.5, "d": "10x", "e": null, "zz": 1});
        let mut problems = Vec::new();
        let f = Fields::object(&body, "", &mut problems).unwrap();
        f.only(&["a", "b", "c", "d", "e"], &mut problems);
        assert_eq!(f.string("a", 1..=10, true, &mut problems), None);
        assert_eq!(f.string("b", 1..=10, true, &mut problems), None);
        assert_eq!(f.integer("c", 0..=10, &mut problems), None);
        assert_eq!(f.duration("d", &mut problems), None);
        assert_eq!(f.required_string("e", 1..=10, true, &mut problems), None);
        assert_eq!(f.boolean("a", &mut problems), None);
        assert_eq!(f.boolean("e", &mut problems), None);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["zz", "a", "b", "c", "d", "e", "a"]);
        assert_eq!(problems[6].message, "must be true or false, not a number");
        let flag = json!({"on": false});
        let f = Fields::object(&flag, "", &mut problems).unwrap();
        assert_eq!(f.boolean("on", &mut problems), Some(false));
        assert_eq!(problems[1].message, "must be a string, not a number");
        assert_eq!(problems[5].message, "is required");
    }

    #[test]
    fn limits_and_control_characters() {
        let body = json!({"t": "a\u{7}b", "n": 2000, "long": "x".repeat(201)});
        let mut problems = Vec::new();
        let f = Fields::object(&body, "p", &mut problems).unwrap();
        assert_eq!(f.string("t", 1..=200, true, &mut problems), None);
        assert_eq!(
            f.string("t", 1..=200, false, &mut problems),
            Some("a\u{7}b")
        );
        assert_eq!(f.integer("n", -1000..=1000, &mut problems), None);
        assert_eq!(f.string("long", 1..=200, true, &mut problems), None);
        assert_eq!(problems[0].field, "p.t");
        assert_eq!(
            problems[1].message,
            "must be between -1000 and 1000 (it is 2000)"
        );
        assert_eq!(
            problems[2].message,
            "must have at most 200 characters (it has 201)"
        );
        assert!(Fields::object(&json!([1]), "", &mut problems).is_none());
        assert_eq!(
            problems[3].message,
            "the request body must be a JSON object, not an array"
        );
    }
}
