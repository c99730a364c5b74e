//! Authentication of the real binary: `sluice api` refuses to start open on a public address
//! or enabled without tokens, warns when it runs open on loopback, and the CLI sends its
//! token (`--token` / `SLUICE_TOKEN`) and reports a 401 or 403 by its problem code with exit
//! status 1.

mod common;

use std::time::Duration;

use common::{Setup, cli, expect_exit, stderr, wait_for_api};
use sluice_testkit::process::SIGTERM;
use sluice_testkit::{free_port, wait_until};

const USER_SECRET: &str = "user-secret-for-the-e2e-test-0123";
const WORKER_SECRET: &str = "worker-secret-for-the-e2e-test-0123";

/// A setup whose config also has `extra` (the `[api]` and `[auth]` sections).
fn setup(extra: &str) -> Setup {
    let setup = Setup::new("concurrency = 1");
    setup.append(extra);
    setup
}

/// Starts `sluice api` with `extra` in its config, expects it to exit 1, returns its log.
async fn refused_start(extra: &str) -> String {
    let setup = setup(extra);
    let mut api = setup.spawn("api", "api");
    let status = expect_exit(&mut api, Duration::from_secs(10), "the api").await;
    let log = setup.log_tail("api", 20);
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

#[tokio::test]
async fn the_api_refuses_to_start_open_on_a_public_address() {
    let log = refused_start(&format!("[api]\nlisten = \"0.0.0.0:{}\"\n\n[auth]\ndisabled = true\n", free_port())).await;
    assert!(log.contains("auth.disabled") && log.contains("api.listen") && log.contains("loopback"), "{log}");
}

#[tokio::test]
async fn the_api_refuses_to_start_with_authentication_enabled_and_no_tokens() {
    let log = refused_start(&format!("[api]\nlisten = \"127.0.0.1:{}\"\n", free_port())).await;
    assert!(log.contains("[[auth.tokens]]"), "{log}");
}

#[tokio::test]
async fn an_open_api_on_loopback_warns_that_anyone_on_the_machine_may_call_it() {
    let setup = setup(&format!("[api]\nlisten = \"127.0.0.1:{}\"\n\n[auth]\ndisabled = true\n", free_port()));
    let mut api = setup.spawn("api", "api");
    wait_until(Duration::from_secs(10), "the warning about the open API", || async {
        setup.log_tail("api", 20).contains("open to anyone on this machine").then_some(())
    })
    .await;
    assert!(setup.log_tail("api", 20).contains("WARN"), "{}", setup.log_tail("api", 20));
    api.signal(SIGTERM);
    let status = expect_exit(&mut api, Duration::from_secs(10), "the api").await;
    assert_eq!(status.code(), Some(0), "{}", setup.log_tail("api", 20));
}

#[tokio::test]
async fn the_cli_sends_its_token_and_reports_401_and_403_with_exit_1() {
    let port = free_port();
    let setup = setup(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[auth.tokens]]\nsubject = \"ci\"\nrole = \"user\"\ntoken_env = \"E2E_USER_TOKEN\"\n\n\
         [[auth.tokens]]\nsubject = \"runner\"\nrole = \"worker\"\ntoken = \"{WORKER_SECRET}\"\n"
    ));
    let _api = setup.spawn_env("api", "api", &[("E2E_USER_TOKEN", USER_SECRET)]);
    let url = format!("http://127.0.0.1:{port}");
    wait_for_api(&url).await;
    let pipeline = setup.dir.path().join("hello.toml");
    std::fs::write(&pipeline, "id = \"hello\"\n[[steps]]\nname = \"only\"\nkind = \"noop\"\n").expect("pipeline file");
    let file = pipeline.to_str().expect("a UTF-8 path");

    let anonymous = cli(&url, &["pipeline", "apply", file], &[]);
    assert_eq!(anonymous.status.code(), Some(1), "{}", stderr(&anonymous));
    assert!(stderr(&anonymous).contains("UNAUTHORIZED (401)"), "{}", stderr(&anonymous));

    let worker = cli(&url, &["pipeline", "apply", file, "--token", WORKER_SECRET], &[]);
    assert_eq!(worker.status.code(), Some(1), "{}", stderr(&worker));
    let text = stderr(&worker);
    assert!(text.contains("FORBIDDEN (403)") && text.contains("has role worker"), "{text}");
    assert!(!text.contains(WORKER_SECRET), "the token is never echoed: {text}");

    let user = cli(&url, &["pipeline", "apply", file], &[("SLUICE_TOKEN", USER_SECRET)]);
    assert_eq!(user.status.code(), Some(0), "{}", stderr(&user));
    assert!(String::from_utf8_lossy(&user.stdout).contains("pipeline hello version 1"));
}
