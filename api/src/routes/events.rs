//! The live event stream: `GET /v1/events`, served as server-sent events.
//!
//! Each subscriber gets an [`EventReader`] of its own (a Redis connection whose reads wait
//! up to [`BLOCK_MS`] for new events, then wait again), so a quiet stream costs one blocked
//! read and no polling. The stream:
//! - starts after the cursor in `after`, else after the one in the `Last-Event-ID` header (a
//!   reconnecting browser sends it), else at the current end of every shard's stream (only
//!   new events);
//! - opens with that position alone (an `id:` line and no data), so a client that
//!   reconnects before the first event still resumes from where it started;
//! - sends each event as `id: <cursor just after it>`, `event: <type>`,
//!   `data: {"id", "type", "data", "at"}`;
//! - filters on the server (`execution`, `type`): after a batch whose last events were
//!   filtered out it sends the position alone again, so a reconnect does not read them
//!   twice;
//! - sends a keep-alive comment after [`KEEP_ALIVE`] without anything else;
//! - ends when the client goes away (dropping the reader closes its connection, which ends
//!   the blocked read), when the server shuts down, or on a store failure (the client
//!   reconnects with its last id). With `once=true` it ends as soon as it has caught up.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use sluice_core::ids;
use sluice_store::{EventCursor, EventReader, Store, StoredEvent};
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, BadRequest, quote};
use crate::extract::ApiQuery;

/// How long one read waits for new events before it is asked again (ms).
pub const BLOCK_MS: u64 = 5_000;
/// Quiet time after which a keep-alive comment is sent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most events read from one shard at a time.
const BATCH: usize = 256;
/// The header a reconnecting client names its last event in.
const LAST_EVENT_ID: &str = "last-event-id";

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Start after this cursor: the `id` of the last event seen, or `0` for the oldest events
    /// kept. Without it (and without a `Last-Event-ID` header) the stream starts at the
    /// current end and sends only new events. Wins over `Last-Event-ID`.
    pub after: Option<String>,
    /// Only the events of this execution.
    pub execution: Option<String>,
    /// Only events whose type starts with this (`execution.`, `job.failed`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// End the stream once it has caught up, instead of waiting for new events (default
    /// `false`).
    pub once: Option<bool>,
}

/// Which events a subscriber wants.
#[derive(Debug, Default)]
struct Filter {
    execution: Option<String>,
    kind: Option<String>,
}

impl Filter {
    fn matches(&self, event: &StoredEvent) -> bool {
        self.execution
            .as_deref()
            .is_none_or(|id| event.data.get("execution_id").and_then(|v| v.as_str()) == Some(id))
            && self
                .kind
                .as_deref()
                .is_none_or(|prefix| event.kind.starts_with(prefix))
    }
}

/// Follow the event stream.
///
/// Server-sent events (`text/event-stream`), oldest first within each shard (every event of
/// one execution is in order). Each event is `id: <cursor>`, `event: <type>` and `data:`
/// one JSON object `{"id", "type", "data", "at"}` (the `Event` schema). The stream opens with
/// its starting position alone (an `id:` line without data), repeats the position alone
/// after events the filters skipped, and sends a keep-alive comment after 15 s of quiet. To
/// resume, pass the last `id` seen as `after` or in the `Last-Event-ID` header.
#[utoipa::path(
    get, path = "/v1/events", tag = "events", operation_id = "events.stream",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header,
            description = "Start after this cursor (what a reconnecting `EventSource` sends); `after` wins."),
    ),
    responses(
        (status = OK, description = "The stream of events.", content_type = "text/event-stream",
            body = String),
        (status = BAD_REQUEST, response = inline(BadRequest)),
    ),
)]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let store = state.store().clone();
    let shards = store.shards();
    let given = match (nonempty(query.after.as_deref()), headers.get(LAST_EVENT_ID)) {
        (Some(after), _) => Some(parse_cursor(after, shards, "`after`")?),
        (None, Some(header)) => {
            let text = header.to_str().map_err(|_| {
                ApiError::BadRequest("the `Last-Event-ID` header is not an event cursor".into())
            })?;
            nonempty(Some(text))
                .map(|text| parse_cursor(text, shards, "the `Last-Event-ID` header"))
                .transpose()?
        }
        (None, None) => None,
    };
    let execution = nonempty(query.execution.as_deref()).map(str::to_string);
    if let Some(id) = &execution
        && ids::parse(id, ids::EXECUTION).is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "`execution` `{}` is not an execution id",
            quote(id)
        )));
    }
    let cursor = match given {
        Some(cursor) => cursor,
        None => store.latest_event_cursor().await?,
    };
    let once = query.once.unwrap_or(false);
    let source = if once {
        Source::Caught(store)
    } else {
        Source::Live(store.event_reader().await?)
    };
    tracing::debug!(subject = %caller.subject, after = %cursor, once, "event subscriber joined");
    let feed = Feed {
        source,
        shards,
        pending: VecDeque::from([Ok(Event::default().id(cursor.to_string()))]),
        cursor,
        filter: Filter {
            execution,
            kind: nonempty(query.kind.as_deref()).map(str::to_string),
        },
        closing: state.closing().clone(),
    };
    let mut response = Sse::new(feed.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn nonempty(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.is_empty())
}

fn parse_cursor(text: &str, shards: u32, what: &str) -> Result<EventCursor, ApiError> {
    EventCursor::parse(text, shards).map_err(|reason| {
        ApiError::BadRequest(format!(
            "{what} `{}` is not an event cursor: {reason}",
            quote(text)
        ))
    })
}

/// Where a subscriber's events come from.
enum Source {
    /// Blocking reads on a connection of the subscriber's own.
    Live(EventReader),
    /// Reads that return at once (`once=true`).
    Caught(Store),
}

/// One subscriber's position and what is ready to send.
struct Feed {
    source: Source,
    shards: u32,
    cursor: EventCursor,
    filter: Filter,
    pending: VecDeque<Result<Event, axum::Error>>,
    closing: CancellationToken,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, axum::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|frame| (frame, feed))
        })
    }

    /// The next frame to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Result<Event, axum::Error>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            let Feed {
                source,
                cursor,
                closing,
                ..
            } = &mut *self;
            let read = async {
                match source {
                    Source::Live(reader) => reader.read(cursor, BATCH, BLOCK_MS).await,
                    Source::Caught(store) => store.read_events(cursor, BATCH).await,
                }
            };
            let batch = tokio::select! {
                biased;
                () = closing.cancelled() => return None,
                batch = read => batch,
            };
            let events = match batch {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream ended by a store failure; the client resumes from its last id");
                    return None;
                }
            };
            let Some(last) = events.last() else {
                if matches!(self.source, Source::Caught(_)) {
                    return None;
                }
                continue;
            };
            match EventCursor::parse(&last.id, self.shards) {
                Ok(cursor) => self.cursor = cursor,
                Err(e) => {
                    tracing::error!(error = %e, cursor = %last.id, "the store gave out an unreadable event cursor");
                    return None;
                }
            }
            let skipped_last = !self.filter.matches(last);
            for event in events.iter().filter(|e| self.filter.matches(e)) {
                self.pending.push_back(frame(event));
            }
            if skipped_last {
                self.pending
                    .push_back(Ok(Event::default().id(self.cursor.to_string())));
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        tracing::debug!(at = %self.cursor, "event subscriber left");
    }
}

/// The frame of one event.
fn frame(event: &StoredEvent) -> Result<Event, axum::Error> {
    let mut frame = Event::default().id(&event.id);
    // A type is a stable name; one that could break the framing is only left out of the
    // `event:` line (it is in the data).
    if !event.kind.is_empty() && !event.kind.contains(['\r', '\n']) {
        frame = frame.event(&event.kind);
    }
    frame.json_data(event)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, execution: Option<&str>) -> StoredEvent {
        StoredEvent {
            id: "1-0".into(),
            kind: kind.into(),
            data: json!({ "execution_id": execution }),
            at: 1,
        }
    }

    #[test]
    fn filters_match_the_execution_and_a_type_prefix() {
        let all = Filter::default();
        assert!(all.matches(&event("job.enqueued", None)));
        let of_a = Filter {
            execution: Some("ex_0_A".into()),
            kind: None,
        };
        assert!(of_a.matches(&event("job.enqueued", Some("ex_0_A"))));
        assert!(!of_a.matches(&event("job.enqueued", Some("ex_0_B"))));
        assert!(!of_a.matches(&event("job.enqueued", None)));
        let steps = Filter {
            execution: Some("ex_0_A".into()),
            kind: Some("execution.step.".into()),
        };
        assert!(steps.matches(&event("execution.step.completed", Some("ex_0_A"))));
        assert!(!steps.matches(&event("execution.completed", Some("ex_0_A"))));
    }
}
