//! Group commit of the scripts called once per job attempt (`start`, `settle`).
//!
//! A busy worker starts and settles dozens of jobs at once. Sent one by one, each is a
//! script call of its own: two Redis round trips per job on top of the lease. Here the calls
//! for one script wait in a queue served by one task: it takes every call queued so far (up
//! to [`MAX_BATCH`]), groups them by shard, and sends each group as a single invocation of
//! the script's batch form, which applies the calls one after the other, each exactly as the
//! single script would (see [`batch_form`]). While one batch is in flight the next one
//! gathers, so an idle store answers a lone call with one round trip as before and a busy one
//! amortises a round trip over many jobs.
//!
//! All keys of a batch belong to one shard, so the invocation stays in one hash slot.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use redis::Value as RValue;
use redis::{ErrorKind, RedisError, Script};
use tokio::sync::{mpsc, oneshot};

use crate::timed::TimedConnection;

/// Most calls sent in one invocation (bounds the time one script holds Redis).
pub(crate) const MAX_BATCH: usize = 128;

/// The driver appended to a script wrapped as `local function body() … end`. ARGV[1] is the
/// number of calls n, ARGV[2 .. 2n+1] each call's key and argument counts, then the calls'
/// arguments one after the other; KEYS are the calls' keys one after the other. Each call
/// sees KEYS and ARGV as the single script would; a call that raises an error answers
/// `{"error", message}` and does not stop the others.
const DRIVER: &str = r"
local all_keys, all_args = {}, {}
for i = 1, #KEYS do all_keys[i] = KEYS[i] end
for i = 1, #ARGV do all_args[i] = ARGV[i] end
local calls = tonumber(all_args[1])
local kp, ap = 0, 1 + 2 * calls
local out = {}
for c = 1, calls do
  local nk, na = tonumber(all_args[2 * c]), tonumber(all_args[2 * c + 1])
  for i = #KEYS, nk + 1, -1 do KEYS[i] = nil end
  for i = 1, nk do KEYS[i] = all_keys[kp + i] end
  for i = #ARGV, na + 1, -1 do ARGV[i] = nil end
  for i = 1, na do ARGV[i] = all_args[ap + i] end
  kp, ap = kp + nk, ap + na
  local ok, reply = pcall(body)
  if ok then
    out[c] = reply
  else
    out[c] = {'error', type(reply) == 'table' and reply.err or tostring(reply)}
  end
end
return out
";

/// The batch form of script `body` with the helpers `lib` (defined once per invocation,
/// outside the per-call function).
pub(crate) fn batch_form(lib: &str, body: &str) -> Script {
    Script::new(&format!("{lib}\nlocal function body()\n{body}\nend\n{DRIVER}"))
}

/// One call: its shard, KEYS and ARGV as the single script takes them, and where to answer.
struct Call {
    shard: u32,
    keys: Vec<String>,
    args: Vec<String>,
    conn: TimedConnection,
    reply: oneshot::Sender<Result<Vec<RValue>, RedisError>>,
}

/// The queue of one script's calls. Cheap to clone; clones share the queue and its task,
/// which is started by the first call (on that call's runtime) and ends with the last clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    single: Arc<Script>,
    batch: Arc<Script>,
    queue: Arc<OnceLock<mpsc::UnboundedSender<Call>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("hash", &self.single.get_hash()).finish_non_exhaustive()
    }
}

impl Batcher {
    /// Batches calls of script `body` with the helpers `lib` prepended.
    pub(crate) fn new(lib: &str, body: &str) -> Self {
        let single = Script::new(&format!("{lib}\n{body}"));
        Self { single: Arc::new(single), batch: Arc::new(batch_form(lib, body)), queue: Arc::default() }
    }

    /// Both forms, for loading them up front.
    pub(crate) fn scripts(&self) -> [&Script; 2] {
        [&self.single, &self.batch]
    }

    /// Runs the script with `keys` and `args` in `shard`, batched with whatever other calls
    /// are waiting, and returns its reply.
    pub(crate) async fn call(&self, conn: &TimedConnection, shard: u32, keys: Vec<String>, args: Vec<String>) -> Result<Vec<RValue>, RedisError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(serve(rx, self.batch.clone()));
            tx
        });
        let (tx, rx) = oneshot::channel();
        let call = Call { shard, keys, args, conn: conn.clone(), reply: tx };
        if let Err(mpsc::error::SendError(call)) = queue.send(call) {
            // The task ended with the runtime that started it: call directly.
            return invoke(&self.single, &mut call.conn.clone(), &call.keys, &call.args).await;
        }
        // A dropped answer means the task stopped with the call possibly sent: like a reply
        // lost with the connection, the caller must find out what happened.
        rx.await.unwrap_or_else(|_| Err(RedisError::from((ErrorKind::Io, "batched call dropped before its reply"))))
    }
}

async fn invoke(script: &Script, conn: &mut TimedConnection, keys: &[String], args: &[String]) -> Result<Vec<RValue>, RedisError> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    inv.arg(args);
    inv.invoke_async(conn).await
}

/// Serves the queue: takes what is waiting, sends it shard by shard, answers each call.
async fn serve(mut rx: mpsc::UnboundedReceiver<Call>, script: Arc<Script>) {
    while let Some(first) = rx.recv().await {
        let mut by_shard: BTreeMap<u32, Vec<Call>> = BTreeMap::new();
        by_shard.entry(first.shard).or_default().push(first);
        let mut taken = 1;
        while taken < MAX_BATCH {
            let Ok(call) = rx.try_recv() else { break };
            by_shard.entry(call.shard).or_default().push(call);
            taken += 1;
        }
        futures::future::join_all(by_shard.into_values().map(|calls| send(&script, calls))).await;
    }
}

/// Sends one shard's calls as one invocation (a lone call as the single script's batch form
/// too, so that every call goes through the same code) and answers each.
async fn send(script: &Script, calls: Vec<Call>) {
    let mut conn = calls[0].conn.clone();
    let mut keys = Vec::with_capacity(calls.iter().map(|c| c.keys.len()).sum());
    let mut args = Vec::with_capacity(1 + 2 * calls.len() + calls.iter().map(|c| c.args.len()).sum::<usize>());
    args.push(calls.len().to_string());
    for c in &calls {
        args.push(c.keys.len().to_string());
        args.push(c.args.len().to_string());
    }
    for c in &calls {
        keys.extend(c.keys.iter().cloned());
        args.extend(c.args.iter().cloned());
    }
    match invoke(script, &mut conn, &keys, &args).await {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for c in calls {
                let _ = c.reply.send(answer(replies.next()));
            }
        }
        Err(e) => {
            for c in calls {
                let _ = c.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One call's answer out of the batch reply.
fn answer(reply: Option<RValue>) -> Result<Vec<RValue>, RedisError> {
    match reply {
        Some(RValue::Array(items)) => {
            if let [RValue::BulkString(tag), RValue::BulkString(message)] = items.as_slice()
                && tag.as_slice() == b"error"
            {
                return Err(RedisError::from((
                    ErrorKind::Extension,
                    "script error",
                    String::from_utf8_lossy(message).into_owned(),
                )));
            }
            Ok(items)
        }
        other => Err(RedisError::from((ErrorKind::UnexpectedReturnType, "batch reply", format!("{other:?}")))),
    }
}
