//! API request bodies: each operation's body through the JSON extractor, the handler's
//! field checks and the domain checks behind them. A refused body is a 4xx problem, never a
//! 5xx, and nothing panics.
//!
//! Input: the first byte picks the operation, the second the `Content-Type`, the rest is the
//! body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_api::fuzzing::{Operation, check_body};

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/problem+json"),
    Some("text/plain"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let [op, ct, body @ ..] = data else {
        return;
    };
    let operation = Operation::ALL[usize::from(*op) % Operation::ALL.len()];
    let content_type = CONTENT_TYPES[usize::from(*ct) % CONTENT_TYPES.len()];
    if let Some(status) = check_body(operation, content_type, body) {
        assert!(
            status.is_client_error(),
            "{operation:?} answers {status} for a refused body"
        );
    }
});
