//! What loading a pipeline file does with its text (as `sluice`'s file loader does): the
//! pipeline, validated, and its `[[schedules]]` tables, each read and checked, whose
//! cadences then compute their first fire times.

use serde_json::Value;
use sluice_core::pipeline;
use sluice_core::schedule::{self, Schedule, Source};

/// 2026-10-25 00:30 UTC, the night Europe goes back to winter time.
const NOW: i64 = 1_792_888_200_000;

pub fn load(text: &str, json: bool) {
    let Ok(value) = pipeline::parse_text(text, json) else {
        return;
    };
    let mut steps = value.clone();
    if let Some(map) = steps.as_object_mut() {
        map.remove("schedules");
    }
    if let Ok(p) = pipeline::from_value(&steps) {
        // The canonical form is what the store keeps and the API serves: it must validate
        // again, to the same pipeline.
        let canonical = serde_json::to_value(&p).expect("a pipeline serialises");
        let again = pipeline::from_value(&canonical).unwrap_or_else(|problems| {
            panic!("the canonical form of a valid pipeline is refused: {problems:?}")
        });
        assert_eq!(
            again, p,
            "the canonical form reads back as another pipeline"
        );
    }
    let default_pipeline = value.get("id").and_then(Value::as_str);
    if let Some(Value::Array(tables)) = value.get("schedules") {
        for (i, table) in tables.iter().enumerate() {
            if let Ok(spec) =
                schedule::parse_spec(table, &format!("schedules[{i}]"), default_pipeline)
            {
                let s = Schedule::new(spec, "fuzz".into(), Source::File, NOW);
                if let Some(first) = s.next_run_at {
                    assert!(
                        first > NOW,
                        "the first fire time {first} is not after its creation {NOW}"
                    );
                }
            }
        }
    }
}
