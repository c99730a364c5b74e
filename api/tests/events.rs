//! The live event stream (`GET /v1/events`) over a real socket against a real Redis: a
//! subscriber sees an execution's events as they happen and in order, resumes after any
//! event (`after`, `Last-Event-ID`), filters on the server, ends when it goes away or the
//! server shuts down, and a malformed cursor is a 400 problem naming where it came from.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Api, api};
use serde_json::{Value, json};
use sluice_api::AppState;
use sluice_core::ids;
use sluice_core::job::Outcome;
use sluice_store::JobStart;
use sluice_store::engine::Settled;
use sluice_testkit::wait_until;

/// Longest wait for one message of a stream.
const PATIENCE: Duration = Duration::from_secs(15);

/// A two-step pipeline of no-ops.
const TWO_STEPS: &str = r#"{"id": "two", "steps": [
    {"name": "build", "kind": "noop"}, {"name": "ship", "kind": "noop"}]}"#;

/// [`Api`] served on a socket of `127.0.0.1`.
struct Served {
    api: Api,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn served() -> Served {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_api::serve(
        listener,
        AppState::new(api.engine.clone()),
        async move {
            let _ = stopped.await;
        },
    ));
    let body: Value = serde_json::from_str(TWO_STEPS).unwrap();
    let r = api.call(Method::PUT, "/v1/pipelines/two", Some(body)).await;
    assert!(r.status.is_success(), "{r:?}");
    Served {
        api,
        base,
        stop: Some(stop),
        server,
    }
}

impl Served {
    /// Starts an execution of `two`; returns its id.
    async fn start(&self) -> String {
        let r = self
            .api
            .call(
                Method::POST,
                "/v1/executions",
                Some(json!({"pipeline": "two"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Runs execution `id` to completion the way a worker does: lease, start and complete
    /// each step's job in turn.
    async fn complete(&self, id: &str) {
        let engine = &self.api.engine;
        let store = engine.store();
        loop {
            let exec = store.get_execution(id).await.unwrap().unwrap();
            if !exec.status.is_live() {
                assert_eq!(exec.status.as_str(), "completed");
                return;
            }
            let job_id = exec.steps[exec.current]
                .job_id
                .clone()
                .expect("the current step has a job");
            let now = engine.now();
            let shard = ids::shard_of(&job_id, ids::JOB).unwrap();
            let leased = store
                .lease(shard, "default", sluice_store::Lane::Builtin, "w", 1, now + 60_000, now, 10)
                .await
                .unwrap();
            assert_eq!(leased.jobs.len(), 1, "the step's job is ready");
            let mut job = leased.jobs.into_iter().next().unwrap();
            assert_eq!(job.id, job_id);
            let token = job.lease.as_ref().unwrap().token.clone();
            match store.start(&job, &token, now + 60_000, now).await.unwrap() {
                JobStart::Started { attempt } => job.attempts = attempt,
                other => panic!("{other:?}"),
            }
            let settled = engine
                .settle(&job, &token, &Outcome::Completed(json!(null)), None, 0)
                .await
                .unwrap();
            assert!(matches!(settled, Settled::Applied(_)), "{settled:?}");
        }
    }

    /// `(id, type)` of execution `id`'s events, from `GET /v1/executions/{id}/events`.
    async fn history(&self, id: &str) -> Vec<String> {
        let r = self
            .api
            .call(Method::GET, &format!("/v1/executions/{id}/events"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Subscribes with `query`, sending `last_event_id` as the header when given.
    async fn subscribe(&self, query: &str, last_event_id: Option<&str>) -> Subscriber {
        sluice_worker::tls::install_crypto_provider();
        let mut request = reqwest::Client::new().get(format!("{}/v1/events{query}", self.base));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(content_type, "text/event-stream");
        Subscriber {
            response,
            buffer: String::new(),
        }
    }

    /// Stops the server; it must return promptly.
    async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the server stops while streams are open")
            .unwrap()
            .unwrap();
    }
}

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: Option<Value>,
}

/// A minimal client of `text/event-stream`: messages end at a blank line, comment lines
/// (keep-alives) are skipped.
struct Subscriber {
    response: reqwest::Response,
    buffer: String,
}

impl Subscriber {
    /// The next message; `None` when the stream ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message {
                    id: None,
                    event: None,
                    data: None,
                };
                let mut lines = 0;
                for line in block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                {
                    lines += 1;
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => message.id = Some(value.to_string()),
                        "event" => message.event = Some(value.to_string()),
                        "data" => {
                            message.data =
                                Some(serde_json::from_str(value).expect("data is one JSON object"))
                        }
                        other => panic!("unexpected field `{other}` in {block:?}"),
                    }
                }
                if lines > 0 {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream sends something in time")
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
    }

    /// The next message that carries an event (skipping bare positions).
    async fn next_event(&mut self) -> Message {
        loop {
            let message = self.next().await.expect("the stream goes on");
            if message.data.is_some() {
                return message;
            }
        }
    }

    /// The opening message: the position the stream starts from, alone.
    async fn opening(&mut self) -> String {
        let message = self.next().await.expect("an opening message");
        assert_eq!(
            (message.event.as_ref(), message.data.as_ref()),
            (None, None),
            "{message:?}"
        );
        message
            .id
            .expect("the opening message carries the position")
    }

    /// Events up to and including `execution.completed` of `id`, each checked to be well
    /// formed.
    async fn until_completed(&mut self, id: &str) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            let message = self.next_event().await;
            let data = message.data.as_ref().unwrap();
            assert_eq!(
                message.id.as_deref(),
                data["id"].as_str(),
                "`id:` is the event's cursor"
            );
            assert_eq!(
                message.event.as_deref(),
                data["type"].as_str(),
                "`event:` is its type"
            );
            assert!(data["at"].as_i64().unwrap() > 0, "{data}");
            assert!(data["data"].is_object(), "{data}");
            let done = data["type"] == "execution.completed" && data["data"]["execution_id"] == id;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

fn types(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.event.clone().unwrap()).collect()
}

#[tokio::test]
async fn a_subscriber_sees_an_execution_live_in_order_and_resumes_after_any_event() {
    let served = served().await;
    let mut live = served.subscribe("", None).await;
    let opening = live.opening().await;
    assert!(!opening.is_empty());
    let id = served.start().await;
    served.complete(&id).await;

    let seen = live.until_completed(&id).await;
    let seen_types = types(&seen);
    assert_eq!(
        seen_types,
        served.history(&id).await,
        "every event of the execution, in order"
    );
    assert_eq!(
        seen_types.first().map(String::as_str),
        Some("execution.started")
    );
    for expected in [
        "job.enqueued",
        "execution.step.started",
        "execution.step.completed",
        "job.completed",
    ] {
        assert_eq!(
            seen_types.iter().filter(|t| *t == expected).count(),
            2,
            "{expected} once per step: {seen_types:?}"
        );
    }
    let position = |t: &str| seen_types.iter().position(|x| x == t).unwrap();
    assert!(
        position("execution.step.started") < position("execution.step.completed"),
        "{seen_types:?}"
    );
    let ids: Vec<&str> = seen.iter().map(|m| m.id.as_deref().unwrap()).collect();
    assert!(
        !ids.contains(&opening.as_str()),
        "the stream started after what was there"
    );

    // Resuming after a middle event sends exactly the events after it: by `after`, by
    // `Last-Event-ID`, and by `after` when both are given.
    let middle = seen.len() / 2;
    let expected: Vec<Message> = seen[middle + 1..].to_vec();
    let cursor = seen[middle].id.clone().unwrap();
    let mut by_query = served.subscribe(&format!("?after={cursor}"), None).await;
    assert_eq!(by_query.opening().await, cursor);
    assert_eq!(by_query.until_completed(&id).await, expected);
    let mut by_header = served.subscribe("", Some(&cursor)).await;
    assert_eq!(by_header.opening().await, cursor);
    assert_eq!(by_header.until_completed(&id).await, expected);
    let mut both = served
        .subscribe(
            &format!("?after={cursor}"),
            Some(seen[0].id.as_deref().unwrap()),
        )
        .await;
    assert_eq!(
        both.until_completed(&id).await,
        expected,
        "`after` wins over the header"
    );

    // `once=true` ends the stream when it has caught up.
    let mut once = served
        .subscribe(&format!("?after={cursor}&once=true"), None)
        .await;
    assert_eq!(once.opening().await, cursor);
    let mut rest = Vec::new();
    while let Some(message) = once.next().await {
        rest.push(message);
    }
    assert_eq!(rest, expected);
    served.shut_down().await;
}

#[tokio::test]
async fn filters_keep_one_execution_or_a_type_prefix_and_still_advance_the_position() {
    let served = served().await;
    let first = served.start().await;
    served.complete(&first).await;
    let second = served.start().await;
    served.complete(&second).await;
    let end = served
        .api
        .engine
        .store()
        .latest_event_cursor()
        .await
        .unwrap()
        .to_string();

    let read_all = |query: String| {
        let served = &served;
        async move {
            let mut subscriber = served.subscribe(&query, None).await;
            let mut messages = Vec::new();
            while let Some(message) = subscriber.next().await {
                messages.push(message);
            }
            messages
        }
    };
    let of_first = read_all(format!("?after=0&once=true&execution={first}")).await;
    let events: Vec<&Message> = of_first.iter().filter(|m| m.data.is_some()).collect();
    assert_eq!(
        events
            .iter()
            .map(|m| m.event.clone().unwrap())
            .collect::<Vec<_>>(),
        served.history(&first).await
    );
    assert!(
        events
            .iter()
            .all(|m| m.data.as_ref().unwrap()["data"]["execution_id"] == first.as_str())
    );
    // The second execution's events came last and were skipped: the stream says where it
    // stopped, so a reconnect does not read them again.
    assert_eq!(
        of_first.last().unwrap(),
        &Message {
            id: Some(end.clone()),
            event: None,
            data: None
        }
    );

    let steps = read_all(format!(
        "?after=0&once=true&type=execution.step.&execution={second}"
    ))
    .await;
    let step_types: Vec<String> = steps.iter().filter_map(|m| m.event.clone()).collect();
    assert_eq!(
        step_types,
        [
            "execution.step.started",
            "execution.step.completed",
            "execution.step.started",
            "execution.step.completed"
        ]
    );
    let everything = read_all("?after=0&once=true".into()).await;
    assert_eq!(
        everything.iter().filter(|m| m.data.is_some()).count(),
        2 * served.history(&first).await.len()
    );
    assert_eq!(everything.last().unwrap().id.as_deref(), Some(end.as_str()));
    served.shut_down().await;
}

/// Connections of the Redis server blocked in `XREAD`.
async fn blocked_reads(served: &Served) -> usize {
    let mut conn = served
        .api
        .redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().filter(|l| l.contains("cmd=xread")).count()
}

#[tokio::test]
async fn a_stream_ends_when_its_client_goes_away_or_the_server_shuts_down() {
    let served = served().await;
    let mut gone = served.subscribe("", None).await;
    gone.opening().await;
    let mut staying = served.subscribe("", None).await;
    staying.opening().await;
    wait_until(
        Duration::from_secs(10),
        "both subscribers to wait in XREAD",
        || async { (blocked_reads(&served).await == 2).then_some(()) },
    )
    .await;
    drop(gone);
    wait_until(
        Duration::from_secs(10),
        "the departed subscriber's read to end",
        || async { (blocked_reads(&served).await == 1).then_some(()) },
    )
    .await;

    // Shutting down ends the remaining stream instead of waiting for its client.
    let Served {
        api,
        mut stop,
        server,
        ..
    } = served;
    stop.take().unwrap().send(()).unwrap();
    assert_eq!(staying.next().await, None, "the stream ends");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    drop(api);
}

#[tokio::test]
async fn a_malformed_cursor_or_execution_is_a_400_naming_where_it_came_from() {
    let api = api().await;
    for (query, header, named) in [
        ("?after=yesterday", None, "`after`"),
        ("?after=1-0,2-0", None, "`after`"),
        ("", Some("nope"), "`Last-Event-ID`"),
        ("?execution=nope", None, "`execution`"),
        ("?once=maybe", None, "once"),
    ] {
        let mut request = axum::http::Request::get(format!("/v1/events{query}"));
        if let Some(value) = header {
            request = request.header("Last-Event-ID", value);
        }
        let r = api
            .send(request.body(axum::body::Body::empty()).unwrap())
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BAD_REQUEST")),
            "{query} {header:?}"
        );
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{query} {header:?}: {detail}");
    }
    // A bad header is ignored when `after` is given.
    let request =
        axum::http::Request::get("/v1/events?after=0&once=true").header("Last-Event-ID", "nope");
    let r = api
        .send(request.body(axum::body::Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}
