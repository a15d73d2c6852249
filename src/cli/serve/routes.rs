//! The endpoints, the API-key check and the request log.
//!
//! `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /health`.
//! A streamed reply is Server-Sent Events as OpenAI sends them: `data: {chunk}\n\n` lines,
//! the first chunk carrying `delta.role`, then content deltas, then a chunk with
//! `finish_reason`, optionally one with `usage` (`stream_options.include_usage`), then
//! `data: [DONE]`.

use super::error::ApiError;
use super::prompt::{self, Prepared};
use super::slots::{Event, Finish, Job, Scheduler};
use super::types::{parse_body, ChatRequest, CompletionRequest, Usage};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chatglm::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Largest request body read: 8 MiB.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// What every handler shares.
pub struct App {
    /// The model.
    pub engine: Arc<Engine>,
    /// Slots and queue.
    pub scheduler: Arc<Scheduler>,
    /// Positions of each slot's KV cache.
    pub context: usize,
    /// The model's name in responses (the file's stem).
    pub model_id: String,
    /// `--api-key`.
    pub api_key: Option<String>,
    /// Numbers the responses' ids.
    pub next_id: AtomicU64,
    /// When the server started (part of the ids).
    pub started: u64,
}

/// Token counts a response carries to the request log.
#[derive(Debug, Clone, Copy)]
struct Logged(Usage);

/// Marks a streamed response: its stream logs the request when it ends.
#[derive(Debug, Clone, Copy)]
struct LogsItself;

/// The router of the server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(method_not_allowed),
        )
        .route(
            "/v1/completions",
            post(completions).fallback(method_not_allowed),
        )
        .route("/v1/models", get(models).fallback(method_not_allowed))
        .route("/health", get(health).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .layer(middleware::from_fn(log))
        .with_state(app)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line per request on stderr: method, path, status, tokens, time. A request whose
/// client went away before the answer was complete is logged with status 499 when it is
/// dropped.
struct LogLine {
    method: Method,
    path: String,
    start: Instant,
    written: bool,
}

impl LogLine {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            start: Instant::now(),
            written: false,
        }
    }

    fn write(&mut self, status: u16, usage: Option<Usage>) {
        let tokens = usage.map_or(String::new(), |u| {
            format!(
                " prompt={} completion={}",
                u.prompt_tokens, u.completion_tokens
            )
        });
        let gone = if status == 499 {
            " (client closed)"
        } else {
            ""
        };
        eprintln!(
            "chatglm serve: {} {} {status}{tokens}{gone} {:.1} ms",
            self.method,
            self.path,
            self.start.elapsed().as_secs_f64() * 1e3
        );
        self.written = true;
    }

    /// Someone else writes this request's line (its stream, when it ends).
    fn hand_over(&mut self) {
        self.written = true;
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.written {
            self.write(499, None);
        }
    }
}

/// When a request arrived (for the time its stream logs).
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

async fn log(mut request: Request, next: Next) -> Response {
    let mut line = LogLine::new(request.method().clone(), request.uri().path());
    request.extensions_mut().insert(Arrived(line.start));
    let response = next.run(request).await;
    if response.extensions().get::<LogsItself>().is_some() {
        line.hand_over();
    } else {
        let usage = response.extensions().get::<Logged>().map(|l| l.0);
        line.write(response.status().as_u16(), usage);
    }
    response
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        if request.uri().path() != "/health" {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same(g.trim().as_bytes(), key.as_bytes())) {
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(request).await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let (free, slots, queued) = app.scheduler.load();
    Json(json!({"status": "ok", "slots": slots, "slots_free": free, "queued": queued}))
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_id,
            "object": "model",
            "created": app.started,
            "owned_by": "chatglm-rs",
        }],
    }))
}

/// Reads the body (at most [`MAX_BODY_BYTES`]; 413 past that). It is read as JSON whatever
/// its `Content-Type` (curl sends a form type by default).
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            let mut e = ApiError::invalid(
                None,
                format!(
                    "the body is larger than {} MiB (or could not be read)",
                    MAX_BODY_BYTES >> 20
                ),
            )
            .with_code("request_too_large");
            e.status = StatusCode::PAYLOAD_TOO_LARGE;
            e
        })
}

/// Which endpoint a reply is for: the shape of its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        }
    }
}

/// The parts of a request's reply that do not change while it streams.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    fn new(app: &App, kind: Kind) -> Self {
        let n = app.next_id.fetch_add(1, Ordering::Relaxed);
        Self {
            kind,
            id: format!("{}-{:x}{:06x}", kind.id_prefix(), app.started, n),
            created: unix_now(),
            model: app.model_id.clone(),
        }
    }

    fn tool_calls(call: &super::tools::ToolCall, id: &str, stream: bool) -> Value {
        let mut c = json!({
            "id": format!("call_{id}"),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        });
        if stream {
            c["index"] = json!(0);
        }
        json!([c])
    }

    /// The whole (non-streamed) response.
    fn full(
        &self,
        text: String,
        finish: Finish,
        call: Option<&super::tools::ToolCall>,
        usage: Usage,
    ) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if let Some(call) = call {
                    message["content"] = Value::Null;
                    message["tool_calls"] = Self::tool_calls(call, &self.id, false);
                }
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish.name()})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.name()})
            }
        };
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion", Kind::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage.json(),
        })
    }

    /// One streamed chunk; `choice` is `{"delta": ...}` (chat) or `{"text": ...}` content.
    fn chunk(&self, choice: Option<Value>, usage: Option<Usage>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion.chunk", Kind::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": choice.map_or(json!([]), |c| json!([c])),
        });
        if let Some(u) = usage {
            chunk["usage"] = u.json();
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    fn delta(&self, text: &str) -> Bytes {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})
            }
        };
        self.chunk(Some(choice), None)
    }

    /// The closing chunks: a tool call's (chat), then the one with `finish_reason`.
    fn last(&self, finish: Finish, call: Option<&super::tools::ToolCall>) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let (Some(call), Kind::Chat) = (call, self.kind) {
            let d = json!({"tool_calls": Self::tool_calls(call, &self.id, true)});
            out.push(self.chunk(
                Some(json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": null})),
                None,
            ));
        }
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish.name()})
            }
            Kind::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish.name()})
            }
        };
        out.push(self.chunk(Some(choice), None));
        out
    }
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    arrived: Option<Extension<Arrived>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let engine = Arc::clone(&app.engine);
    let context = app.context;
    // Parsing and tokenizing up to 8 MiB is work: not on the executor.
    let prepared = tokio::task::spawn_blocking(move || {
        let req: ChatRequest = parse_body(&bytes)?;
        let include_usage = stream_usage(req.stream, &req.stream_options);
        let prepared = prompt::chat(&req, engine.tokenizer(), context)?;
        Ok::<_, ApiError>((prepared, req.stream.unwrap_or(false), include_usage))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    generate(app, Kind::Chat, prepared, arrived).await
}

async fn completions(
    State(app): State<Arc<App>>,
    arrived: Option<Extension<Arrived>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let engine = Arc::clone(&app.engine);
    let context = app.context;
    let prepared = tokio::task::spawn_blocking(move || {
        let req: CompletionRequest = parse_body(&bytes)?;
        let include_usage = stream_usage(req.stream, &req.stream_options);
        let prepared = prompt::completion(&req, engine.tokenizer(), context)?;
        Ok::<_, ApiError>((prepared, req.stream.unwrap_or(false), include_usage))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    generate(app, Kind::Completion, prepared, arrived).await
}

fn stream_usage(stream: Option<bool>, options: &Option<super::types::StreamOptions>) -> bool {
    stream.unwrap_or(false)
        && options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
}

/// Queues the job and answers: the whole reply, or a stream of chunks.
async fn generate(
    app: Arc<App>,
    kind: Kind,
    (prepared, stream, include_usage): (Prepared, bool, bool),
    arrived: Option<Extension<Arrived>>,
) -> Result<Response, ApiError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    if app
        .scheduler
        .submit(Job {
            prepared,
            events: tx,
        })
        .is_err()
    {
        return Err(ApiError::busy(1));
    }
    let reply = Reply::new(&app, kind);
    if !stream {
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(Event::Delta(t)) => text.push_str(&t),
                Some(Event::Done {
                    finish,
                    tool_call,
                    usage,
                }) => {
                    let body = reply.full(text, finish, tool_call.as_ref(), usage);
                    let mut response = Json(body).into_response();
                    response.extensions_mut().insert(Logged(usage));
                    return Ok(response);
                }
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(ApiError::internal("the slot stopped without a reply")),
            }
        }
    }

    // Streamed: the first event decides the status (a failure before any text is an error
    // response, not a stream).
    let first = rx.recv().await;
    if let Some(Event::Failed(e)) = first {
        return Err(e);
    }
    let path = match kind {
        Kind::Chat => "/v1/chat/completions",
        Kind::Completion => "/v1/completions",
    };
    let mut opening = Vec::new();
    if kind == Kind::Chat {
        opening.push(reply.chunk(
            Some(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})),
            None,
        ));
    }
    struct StreamState {
        reply: Reply,
        rx: mpsc::UnboundedReceiver<Event>,
        pending: std::collections::VecDeque<Bytes>,
        next: Option<Event>,
        done: bool,
        include_usage: bool,
        log: LogLine,
    }
    let mut log = LogLine::new(Method::POST, path);
    if let Some(Extension(Arrived(at))) = arrived {
        log.start = at;
    }
    let state = StreamState {
        reply,
        rx,
        pending: opening.into(),
        next: first,
        done: false,
        include_usage,
        log,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(b), s));
            }
            if s.done {
                return None;
            }
            let event = match s.next.take() {
                Some(e) => Some(e),
                None => s.rx.recv().await,
            };
            match event {
                Some(Event::Delta(t)) => s.pending.push_back(s.reply.delta(&t)),
                Some(Event::Done {
                    finish,
                    tool_call,
                    usage,
                }) => {
                    s.pending.extend(s.reply.last(finish, tool_call.as_ref()));
                    if s.include_usage {
                        s.pending.push_back(s.reply.chunk(None, Some(usage)));
                    }
                    s.pending.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    s.done = true;
                    s.log.write(200, Some(usage));
                }
                Some(Event::Failed(e)) => {
                    // Headers are sent: the error goes in the stream, as OpenAI does.
                    s.pending
                        .push_back(Bytes::from(format!("data: {}\n\n", e.body())));
                    s.pending.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    s.done = true;
                    s.log.write(e.status.as_u16(), None);
                }
                None => return None,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(LogsItself);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::serve::tools::ToolCall;

    fn reply(kind: Kind) -> Reply {
        Reply {
            kind,
            id: "chatcmpl-1".into(),
            created: 5,
            model: "m".into(),
        }
    }

    #[test]
    fn a_tool_call_answers_in_openai_shape() {
        let call = ToolCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        };
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            cached_tokens: 0,
        };
        let v = reply(Kind::Chat).full(String::new(), Finish::ToolCalls, Some(&call), usage);
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let c = &choice["message"]["tool_calls"][0];
        assert_eq!(c["type"], "function");
        assert_eq!(c["function"]["name"], "get_weather");
        assert_eq!(c["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert!(c["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(v["usage"]["total_tokens"], 5);

        let chunks: Vec<Value> = reply(Kind::Chat)
            .last(Finish::ToolCalls, Some(&call))
            .iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap();
                let s = s
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                serde_json::from_str(s).unwrap()
            })
            .collect();
        assert_eq!(chunks.len(), 2);
        let d = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(d["index"], 0);
        assert_eq!(d["function"]["name"], "get_weather");
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[1]["object"], "chat.completion.chunk");
    }
}
