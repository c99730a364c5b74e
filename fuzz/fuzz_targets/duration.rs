//! Durations (`250ms`, `1h30m`): a parsed duration formats to text that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match duration::parse(text) {
        Ok(d) => {
            let formatted = duration::format(d);
            assert_eq!(
                duration::parse(&formatted),
                Ok(d),
                "`{text}` formats as `{formatted}`, which reads back differently"
            );
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
