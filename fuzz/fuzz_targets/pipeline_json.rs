//! A pipeline file in JSON (the API's document form): parsed, validated, its schedules read.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "pipeline_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        common::load(text, true);
    }
});
