use serde_json::json;

use super::*;

/// A minute boundary (2023-11-14T22:14:00Z).
const T0: Millis = 1_700_000_040_000;
const MIN: Millis = 60_000;

fn fields(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

fn spec(extra: Value) -> ScheduleSpec {
    let mut body = json!({"name": "nightly", "pipeline": "release", "cron": "* * * * *"});
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), extra) {
        map.extend(extra);
    }
    parse_spec(&body, "", None).expect("valid spec")
}

fn schedule(extra: Value, now: Millis) -> Schedule {
    Schedule::new(spec(extra), "sch_0_01JD0000000000000000000000".into(), Source::Api, now)
}

#[test]
fn a_minimal_spec_gets_the_documented_defaults() {
    let s = spec(json!({}));
    assert_eq!(s.target, "schedule:nightly");
    assert_eq!(s.input, json!({}));
    assert!(s.enabled);
    assert_eq!((s.overlap, s.catch_up), (Overlap::Skip, CatchUp::One));
    assert_eq!(s.cadence.timezone(), DEFAULT_TIMEZONE);
    assert_eq!(s.cadence.cron_expr(), Some("* * * * *"));
}

#[test]
fn every_problem_of_a_spec_is_reported_under_its_path() {
    let body = json!({
        "colour": "red", "cron": "0 9 * * *", "every": "1h", "input": [1],
        "overlap": "sometimes", "catch_up": 3, "enabled": "yes", "weekdays": [1, 9],
    });
    let problems = parse_spec(&body, "schedules[2]", None).unwrap_err();
    assert_eq!(
        fields(&problems),
        [
            "schedules[2].colour",
            "schedules[2].name",
            "schedules[2].pipeline",
            "schedules[2].input",
            "schedules[2].weekdays[1]",
            "schedules[2].every",
            "schedules[2].enabled",
            "schedules[2].overlap",
            "schedules[2].catch_up",
        ]
    );
    assert!(problems[5].message.contains("not both"), "{}", problems[5].message);
    assert_eq!(problems[7].message, "must be `skip` or `allow`, not \"sometimes\"");
}

#[test]
fn a_spec_needs_a_cadence_and_a_cron_has_no_window() {
    let problems = parse_spec(&json!({"name": "n", "pipeline": "p"}), "", None).unwrap_err();
    assert_eq!(fields(&problems), ["cron"]);
    assert!(problems[0].message.contains("`every`"));
    let problems =
        parse_spec(&json!({"name": "n", "pipeline": "p", "cron": "0 9 * * *", "hours": "9-17"}), "", None).unwrap_err();
    assert_eq!(fields(&problems), ["hours"]);
}

#[test]
fn cadence_problems_name_their_field_under_the_spec() {
    let problems =
        parse_spec(&json!({"name": "n", "pipeline": "p", "cron": "61 * * * *", "timezone": "Mars/Olympus"}), "schedules[0]", None)
            .unwrap_err();
    let named = fields(&problems);
    assert!(named.contains(&"schedules[0].cron"), "{problems:?}");
    assert!(named.contains(&"schedules[0].timezone"), "{problems:?}");
}

#[test]
fn the_pipeline_of_a_pipeline_file_is_the_default_and_names_cannot_look_like_ids() {
    let s = parse_spec(&json!({"name": "n", "every": "1h"}), "schedules[0]", Some("release")).unwrap();
    assert_eq!(s.pipeline, "release");
    let problems = parse_spec(&json!({"name": "sch_0_01JD0000000000000000000000", "pipeline": "p", "every": "1h"}), "", None)
        .unwrap_err();
    assert_eq!(fields(&problems), ["name"]);
}

#[test]
fn a_new_schedule_is_due_at_its_first_fire_time_after_now_unless_disabled() {
    let s = schedule(json!({}), T0 + 10_000);
    assert_eq!(s.next_run_at, Some(T0 + MIN));
    assert_eq!(s.last_run_at, None);
    let off = schedule(json!({"enabled": false}), T0);
    assert_eq!(off.next_run_at, None);
}

#[test]
fn an_on_time_fire_is_not_late_and_moves_to_the_next_fire_time() {
    let s = schedule(json!({}), T0 - 1);
    assert_eq!(plan_due(&s, T0 - 1), None, "not due yet");
    let plan = plan_due(&s, T0 + 400).unwrap();
    assert_eq!(plan, DuePlan::Fire { due_at: T0, late_ms: 400, missed: 0, next_run_at: Some(T0 + MIN) });
    let mut off = s.clone();
    off.enabled = false;
    assert_eq!(plan_due(&off, T0 + 400), None, "a disabled schedule never fires");
}

#[test]
fn five_missed_due_times_collapse_into_one_late_fire_with_catch_up_one() {
    // Due at T0; no scheduler ran across T0 … T0 + 4 min; now is 30 s after the fifth.
    let s = schedule(json!({}), T0 - 1);
    let now = T0 + 4 * MIN + 30_000;
    let plan = plan_due(&s, now).unwrap();
    assert_eq!(plan, DuePlan::Fire { due_at: T0, late_ms: now - T0, missed: 4, next_run_at: Some(T0 + 5 * MIN) });
    let row = ScheduleRun::fired("r".into(), Trigger::Schedule, Some(T0), now, "ex_0_X", 4);
    assert!(row.late);
    assert_eq!(row.missed, 4, "the four due times after the one fired, which stands for the fifth");
}

#[test]
fn with_catch_up_none_a_late_fire_is_dropped_counting_every_missed_due_time() {
    let s = schedule(json!({"catch_up": "none"}), T0 - 1);
    let now = T0 + 4 * MIN + 30_000;
    assert_eq!(plan_due(&s, now), Some(DuePlan::Drop { due_at: T0, missed: 5, next_run_at: Some(T0 + 5 * MIN) }));
    // A single due time more than the grace late is missed too…
    let hourly = schedule(json!({"catch_up": "none", "cron": "0 * * * *"}), T0);
    let due = hourly.next_run_at.unwrap();
    let late = due + 10_000 + LATE_GRACE_MS;
    assert!(matches!(plan_due(&hourly, late), Some(DuePlan::Drop { missed: 1, .. })), "{:?}", plan_due(&hourly, late));
    // … but a fire within the grace is on time.
    assert!(matches!(plan_due(&hourly, due + 2_000), Some(DuePlan::Fire { missed: 0, .. })));
    assert!(matches!(plan_due(&s, T0 + 2_000), Some(DuePlan::Fire { missed: 0, .. })));
}

#[test]
fn disabling_clears_the_due_time_and_re_enabling_recomputes_it_from_now() {
    let s = schedule(json!({}), T0 - 1);
    let (off, next) = s.patched(&SchedulePatch { enabled: Some(false), ..SchedulePatch::default() }, T0 + 5).unwrap();
    assert_eq!(next, NextRun::Set(None));
    assert_eq!(off.next_run_at, None);
    // Hours later the stale due time T0 is not fired: the next one after now is.
    let later = T0 + 90 * MIN + 7_000;
    let (on, next) = off.patched(&SchedulePatch { enabled: Some(true), ..SchedulePatch::default() }, later).unwrap();
    assert_eq!(next, NextRun::Set(Some(T0 + 91 * MIN)));
    assert_eq!(on.next_run_at, Some(T0 + 91 * MIN));
    assert!(on.enabled);
}

#[test]
fn a_patch_leaves_the_due_time_alone_unless_it_changes_the_cadence_or_the_switch() {
    let s = schedule(json!({}), T0 - 1);
    let patch = SchedulePatch { target: Some("repo:x".into()), overlap: Some(Overlap::Allow), ..SchedulePatch::default() };
    let (changed, next) = s.patched(&patch, T0 + 5).unwrap();
    assert_eq!(next, NextRun::Keep);
    assert_eq!((changed.target.as_str(), changed.overlap), ("repo:x", Overlap::Allow));
    let (again, next) = s.patched(&SchedulePatch { enabled: Some(true), ..SchedulePatch::default() }, T0 + 5).unwrap();
    assert_eq!(next, NextRun::Keep, "enabling an enabled schedule changes nothing");
    assert_eq!(again.next_run_at, Some(T0));
    let (hourly, next) =
        s.patched(&SchedulePatch { cron: Some("0 * * * *".into()), ..SchedulePatch::default() }, T0 + 5).unwrap();
    assert_eq!(hourly.cadence.cron_expr(), Some("0 * * * *"));
    assert_eq!(next, NextRun::Set(hourly.cadence.next_after(T0 + 5)));
}

#[test]
fn a_patch_can_switch_the_cadence_kind_and_keeps_the_rest_of_it() {
    let s = schedule(json!({"timezone": "Europe/Berlin"}), T0);
    let (every, _) = s.patched(&SchedulePatch { every: Some("6h".into()), ..SchedulePatch::default() }, T0).unwrap();
    assert_eq!(every.cadence.every_ms(), Some(6 * 3_600_000));
    assert_eq!(every.cadence.timezone(), "Europe/Berlin", "the zone is kept");
    let (windowed, _) =
        every.patched(&SchedulePatch { hours: Some(Some("22-6".into())), ..SchedulePatch::default() }, T0).unwrap();
    assert_eq!((windowed.cadence.every_ms(), windowed.cadence.hours()), (Some(6 * 3_600_000), Some("22-6")));
    let (cleared, _) = windowed.patched(&SchedulePatch { hours: Some(None), ..SchedulePatch::default() }, T0).unwrap();
    assert_eq!(cleared.cadence.hours(), None);
    let problems = s.patched(&SchedulePatch { weekdays: Some(vec![1]), ..SchedulePatch::default() }, T0).unwrap_err();
    assert_eq!(fields(&problems), ["weekdays"], "a cron cadence has no window");
}

#[test]
fn patch_bodies_report_every_problem() {
    let problems =
        parse_patch(&json!({"name": "x", "cron": "0 9 * * *", "every": "1h", "enabled": 1, "input": "x"})).unwrap_err();
    assert_eq!(fields(&problems), ["name", "input", "enabled", "every"]);
    let patch = parse_patch(&json!({"hours": null, "weekdays": [], "overlap": "allow"})).unwrap();
    assert_eq!(patch.hours, Some(None));
    assert_eq!(patch.weekdays, Some(vec![]));
    assert_eq!(patch.overlap, Some(Overlap::Allow));
    assert!(patch.changes_cadence());
    assert!(!parse_patch(&json!({"enabled": false})).unwrap().changes_cadence());
}

#[test]
fn respecifying_from_a_file_changes_only_what_differs() {
    let s = schedule(json!({}), T0 - 1);
    assert_eq!(s.respecified(&spec(json!({})), Source::Api, T0), None);
    let (changed, next) = s.respecified(&spec(json!({"target": "repo:y"})), Source::File, T0 + 5).unwrap();
    assert_eq!((changed.target.as_str(), changed.source, next), ("repo:y", Source::File, NextRun::Keep));
    let (_, next) = s.respecified(&spec(json!({"cron": "0 * * * *"})), Source::File, T0 + 5).unwrap();
    assert!(matches!(next, NextRun::Set(Some(_))));
}

#[test]
fn run_now_advances_the_cadence_of_an_enabled_schedule_only() {
    let s = schedule(json!({}), T0 - 1);
    assert_eq!(plan_run_now(&s, T0 + 30 * MIN + 1), NextRun::Set(Some(T0 + 31 * MIN)));
    let off = schedule(json!({"enabled": false}), T0);
    assert_eq!(plan_run_now(&off, T0), NextRun::Keep);
}

#[test]
fn overlap_allow_gives_each_execution_its_own_target() {
    let skip = schedule(json!({"target": "repo:a"}), T0);
    assert_eq!(execution_target(&skip, T0), "repo:a");
    let allow = schedule(json!({"target": "repo:a", "overlap": "allow"}), T0);
    assert_eq!(execution_target(&allow, T0), format!("repo:a#nightly@{T0}"));
}

#[test]
fn a_fired_row_shows_its_executions_outcome() {
    let mut row = ScheduleRun::fired("r".into(), Trigger::Schedule, Some(T0), T0 + 10, "ex_0_X", 0);
    assert!(!row.late);
    assert_eq!(row.status, RunStatus::Running);
    row.reconcile(Some((ExecutionStatus::Blocked, None)));
    assert_eq!(row.status, RunStatus::Running);
    row.reconcile(Some((ExecutionStatus::Failed, Some(T0 + 99))));
    assert_eq!((row.status, row.finished_at), (RunStatus::Failed, Some(T0 + 99)));
    row.reconcile(None);
    assert_eq!(row.status, RunStatus::Failed, "a pruned execution leaves the row as it was");
    let mut skipped = ScheduleRun::busy(T0, T0 + 10);
    skipped.reconcile(Some((ExecutionStatus::Completed, Some(T0))));
    assert_eq!(skipped.status, RunStatus::Skipped, "a skipped row has no execution to read");
    assert_eq!(ScheduleRun::dropped(T0, T0 + 10, 5).id, format!("missed_{T0}"));
}
