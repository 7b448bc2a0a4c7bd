//! The HTTP side: routes, and the one pipeline every request goes through.
//!
//! Order per request: count it in flight, let the dialect authenticate and parse (in the
//! provider's own order, so a wrong key wins over a bad body), pick the fault, record,
//! then answer: an error status, a broken connection, or the reply (paced, possibly with
//! a mid-stream fault). Keeping this in one place is what makes a fault mean the same thing
//! in all four formats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use serde_json::Value;

use super::anthropic::Anthropic;
use super::azure::Azure;
use super::chat::error_body;
use super::conn::ConnKill;
use super::content::fnv1a;
use super::dialect::{Dialect, ErrorCtx, Incoming, Rejection, request_id};
use super::faults::{Fault, FaultPicker, RetryHint, ScriptedFault};
use super::gemini::Gemini;
use super::openai::OpenAi;
use super::options::MockOptions;
use super::quota::{QuotaBook, QuotaState};
use super::record::{Flight, RecordedRequest, Stats, WireFormat, lock};
use super::reply::{ChatRequest, Reply, prompt_tokens};
use super::sse::{Frame, StreamFault, StreamPlan, once_body, stream_body};

/// Lean mode keeps at most this many pre-rendered replies.
const CACHE_LIMIT: usize = 4096;

/// A reply rendered once and served many times (lean mode).
#[derive(Clone, Debug)]
enum Rendered {
    Json { body: Bytes, chunks: usize },
    Frames(Arc<[Frame]>),
}

/// State shared by the handlers and the [`super::MockProvider`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    options: RwLock<Arc<MockOptions>>,
    faults: Mutex<FaultPicker>,
    pub(crate) stats: Arc<Stats>,
    seq: AtomicU64,
    cache: Mutex<HashMap<u64, Rendered>>,
    quota: QuotaBook,
}

impl Shared {
    pub(crate) fn new(options: MockOptions) -> Shared {
        Shared {
            faults: Mutex::new(FaultPicker::new(&options)),
            options: RwLock::new(Arc::new(options)),
            stats: Arc::new(Stats::default()),
            seq: AtomicU64::new(1),
            cache: Mutex::new(HashMap::new()),
            quota: QuotaBook::default(),
        }
    }

    pub(crate) fn options(&self) -> Arc<MockOptions> {
        Arc::clone(
            &self
                .options
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// New behaviour for requests that arrive from now on (in-flight ones keep theirs).
    pub(crate) fn set_options(&self, options: MockOptions) {
        lock(&self.faults).reseed(&options);
        lock(&self.cache).clear();
        *self
            .options
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(options);
    }

    pub(crate) fn push_faults(&self, faults: impl IntoIterator<Item = ScriptedFault>) {
        lock(&self.faults).push(faults);
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure),
        )
        .route("/v1/messages", post(anthropic))
        // Gemini's `{model}:{method}` is one path segment; split it ourselves.
        .route("/v1beta/models/{target}", post(gemini))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

/// What the router extracted for one request.
struct Arrival {
    shared: Arc<Shared>,
    conn: ConnKill,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

async fn openai(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &OpenAi,
        None,
        None,
        Arrival {
            shared,
            conn,
            uri,
            headers,
            body,
        },
    )
    .await
}

async fn azure(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &Azure,
        Some(&deployment),
        None,
        Arrival {
            shared,
            conn,
            uri,
            headers,
            body,
        },
    )
    .await
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &Anthropic,
        None,
        None,
        Arrival {
            shared,
            conn,
            uri,
            headers,
            body,
        },
    )
    .await
}

async fn gemini(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    Path(target): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (model, method) = target.rsplit_once(':').unwrap_or((&target, ""));
    handle(
        &Gemini,
        Some(model),
        Some(method),
        Arrival {
            shared,
            conn,
            uri,
            headers,
            body,
        },
    )
    .await
}

/// Anything else: recorded (a misrouted adapter shows up in `requests()`), then 404.
async fn unknown_route(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let flight = shared.stats.begin();
    let format = match uri.path() {
        p if p.starts_with("/openai/") => WireFormat::Azure,
        p if p.starts_with("/v1beta/") => WireFormat::Gemini,
        p if p.starts_with("/v1/messages") => WireFormat::Anthropic,
        _ => WireFormat::OpenAi,
    };
    tracing::warn!(path = uri.path(), "mock provider: no such route");
    let message = format!("mock provider: no route for {}", uri.path());
    let rejection = Rejection::json(
        StatusCode::NOT_FOUND,
        &error_body(&message, "invalid_request_error", None, Some("unknown_url")),
    );
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let record =
        (!shared.options().lean).then(|| record(&uri, &headers, json, format, None, None, arrival));
    shared.stats.record(record);
    respond_rejection(&headers_of(&[]), rejection, flight, arrival)
}

fn record(
    uri: &Uri,
    headers: &HeaderMap,
    body: Value,
    format: WireFormat,
    request: Option<&ChatRequest>,
    fault: Option<Fault>,
    received_at: Instant,
) -> RecordedRequest {
    let model = request.map(|r| r.model.clone()).unwrap_or_else(|| {
        body.get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    });
    RecordedRequest {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        format,
        model,
        prompt: request.map(|r| r.prompt.clone()).unwrap_or_default(),
        stream: request.is_some_and(|r| r.stream),
        key: format.carried_key(headers).map(str::to_owned),
        fault,
        received_at_wall: std::time::SystemTime::now() - received_at.elapsed(),
        received_at,
        body,
    }
}

async fn handle(
    dialect: &'static dyn Dialect,
    path_model: Option<&str>,
    method: Option<&str>,
    a: Arrival,
) -> Response {
    let arrival = Instant::now();
    let flight = a.shared.stats.begin();
    let options = a.shared.options();
    let seq = a.shared.seq.fetch_add(1, Ordering::Relaxed);
    let request_id = request_id(seq);
    let json: Option<Value> = serde_json::from_slice(&a.body).ok();
    let parsed = dialect.parse(&Incoming {
        headers: &a.headers,
        query: a.uri.query(),
        path_model,
        method,
        body: json.as_ref(),
        api_keys: &options.api_keys,
        request_id: &request_id,
    });
    let mut fault = parsed
        .as_ref()
        .ok()
        .and_then(|r| lock(&a.shared.faults).pick(&options, &r.model, &r.prompt));
    let quota = match (&parsed, options.quota) {
        (Ok(r), Some(quota)) => Some(a.shared.quota.take(quota, &r.model, arrival)),
        _ => None,
    };
    if quota.is_some_and(|q| q.over) {
        fault.get_or_insert(Fault::RateLimited(RetryHint::None));
    }
    let recorded = (!options.lean).then(|| {
        let json = json.unwrap_or(Value::Null);
        let request = parsed.as_ref().ok();
        let mut r = record(
            &a.uri,
            &a.headers,
            json,
            dialect.format(),
            request,
            fault.clone(),
            arrival,
        );
        if r.model.is_empty() {
            r.model = path_model.unwrap_or_default().to_owned();
        }
        r
    });
    a.shared.stats.record(recorded);
    let request = match parsed {
        Ok(request) => request,
        Err(rejection) => {
            let headers = headers_of(&dialect.headers(&request_id, false));
            return respond_rejection(&headers, rejection, flight, arrival);
        }
    };
    tracing::debug!(
        format = ?dialect.format(),
        model = %request.model,
        stream = request.stream,
        fault = ?fault,
        "mock provider request"
    );
    let exchange = Exchange {
        shared: a.shared,
        dialect,
        options,
        request,
        seq,
        request_id,
        arrival,
        flight,
        conn: a.conn,
        quota,
    };
    exchange.respond(fault).await
}

/// One request being answered.
struct Exchange {
    shared: Arc<Shared>,
    dialect: &'static dyn Dialect,
    options: Arc<MockOptions>,
    request: ChatRequest,
    seq: u64,
    request_id: String,
    arrival: Instant,
    flight: Flight,
    conn: ConnKill,
    /// What this request found of the provider's quota, if one is set.
    quota: Option<QuotaState>,
}

/// How the fault shapes an otherwise normal reply.
#[derive(Default)]
struct Shape {
    refused: bool,
    broken_tool_arguments: bool,
    stream_fault: Option<(usize, StreamFault)>,
    cut_body: bool,
    /// Time spent waiting on purpose before the reply (excluded from the service time).
    slept: Duration,
}

impl Exchange {
    /// The dialect's headers, with the quota's in place of the usual rate-limit ones.
    fn headers(&self, rate_limited: bool) -> HeaderMap {
        let mut pairs = self.dialect.headers(&self.request_id, rate_limited);
        if let Some(quota) = &self.quota {
            let overrides = self.dialect.quota_headers(quota);
            pairs.retain(|(name, _)| overrides.iter().all(|(o, _)| o != name));
            pairs.extend(overrides);
        }
        headers_of(&pairs)
    }

    async fn respond(self, fault: Option<Fault>) -> Response {
        let stream = self.request.stream;
        let Some(fault) = fault else {
            return self.reply(Shape::default()).await;
        };
        match fault {
            Fault::DropConnection => self.drop_connection().await,
            Fault::SlowFirstToken(delay) => {
                pause(delay).await;
                self.reply(Shape {
                    slept: delay,
                    ..Shape::default()
                })
                .await
            }
            Fault::StallMidStream {
                after_tokens,
                stall,
            } if stream => {
                self.reply(Shape {
                    stream_fault: Some((after_tokens, StreamFault::Stall(stall))),
                    ..Shape::default()
                })
                .await
            }
            Fault::StallMidStream { stall, .. } => {
                pause(stall).await;
                self.reply(Shape {
                    slept: stall,
                    ..Shape::default()
                })
                .await
            }
            Fault::CutMidStream { after_tokens } if stream => {
                self.reply(Shape {
                    stream_fault: Some((after_tokens, StreamFault::Cut)),
                    ..Shape::default()
                })
                .await
            }
            Fault::CutMidStream { .. } => {
                self.reply(Shape {
                    cut_body: true,
                    ..Shape::default()
                })
                .await
            }
            Fault::MalformedChunk { after_tokens } if stream => {
                let inject = StreamFault::Inject {
                    bytes: self.dialect.malformed(),
                    end: false,
                };
                self.reply(Shape {
                    stream_fault: Some((after_tokens, inject)),
                    ..Shape::default()
                })
                .await
            }
            Fault::InStreamError { after_tokens } if stream => {
                let inject = StreamFault::Inject {
                    bytes: self.dialect.stream_error(),
                    end: true,
                };
                self.reply(Shape {
                    stream_fault: Some((after_tokens, inject)),
                    ..Shape::default()
                })
                .await
            }
            Fault::InStreamError { .. } => {
                let fault = self.dialect.stream_error_status();
                self.error(&fault)
            }
            Fault::GarbageBody | Fault::MalformedChunk { .. } => self.garbage(),
            Fault::ContentFiltered if self.dialect.filters_in_band() => {
                self.reply(Shape {
                    refused: true,
                    ..Shape::default()
                })
                .await
            }
            Fault::InvalidToolArguments => {
                self.reply(Shape {
                    broken_tool_arguments: true,
                    ..Shape::default()
                })
                .await
            }
            other => self.error(&other),
        }
    }

    async fn drop_connection(mut self) -> Response {
        // Intentional: not a client disconnect.
        self.flight.complete();
        self.conn.kill();
        // The connection fails at hyper's next poll and this future is dropped with it;
        // returning a response instead could race the kill and leak a head.
        std::future::pending::<Response>().await
    }

    fn error(self, fault: &Fault) -> Response {
        let prompt_tokens = prompt_tokens(&self.request, &self.options);
        let ctx = ErrorCtx {
            model: &self.request.model,
            prompt_tokens,
            request_id: &self.request_id,
        };
        let rejection = self.dialect.error(fault, &ctx);
        let limited = rejection.status == StatusCode::TOO_MANY_REQUESTS;
        let headers = self.headers(limited);
        respond_rejection(&headers, rejection, self.flight, self.arrival)
    }

    fn garbage(self) -> Response {
        let body = Bytes::from_static(
            b"<html><body><h1>502 Bad Gateway</h1>upstream returned garbage</body></html>",
        );
        let headers = self.headers(false);
        let service = self.arrival.elapsed();
        build(
            StatusCode::OK,
            "application/json",
            headers,
            service,
            once_body(body, self.flight, false),
        )
    }

    /// The reply, rendered (or taken from the lean cache).
    fn rendered(&self, shape: &Shape) -> Rendered {
        let faulty = shape.refused || shape.broken_tool_arguments;
        let key =
            (self.options.lean && !faulty).then(|| cache_key(self.dialect.format(), &self.request));
        if let Some(hit) = key.and_then(|k| lock(&self.shared.cache).get(&k).cloned()) {
            return hit;
        }
        let mut reply = Reply::decide(&self.request, &self.options, shape.refused, self.seq);
        if shape.broken_tool_arguments {
            reply.break_tool_arguments();
        }
        let rendered = if self.request.stream {
            Rendered::Frames(
                self.dialect
                    .frames(&reply, &self.request, &self.options)
                    .into(),
            )
        } else {
            Rendered::Json {
                body: self.dialect.render(&reply, &self.request),
                chunks: reply.content_chunks(),
            }
        };
        if let Some(key) = key {
            let mut cache = lock(&self.shared.cache);
            if cache.len() < CACHE_LIMIT {
                cache.insert(key, rendered.clone());
            }
        }
        rendered
    }

    async fn reply(mut self, shape: Shape) -> Response {
        let pace = self.options.pace(&self.request.model);
        if self.options.record_token_times {
            self.flight.keep_token_times(self.request.prompt.clone());
        }
        let headers = self.headers(false);
        match self.rendered(&shape) {
            Rendered::Frames(frames) => {
                let plan = StreamPlan {
                    frames,
                    first_token_delay: pace.first_token_delay,
                    token_interval: pace.token_interval,
                    fault: shape.stream_fault,
                };
                let service = self.arrival.elapsed().saturating_sub(shape.slept);
                let mut response = build(
                    StatusCode::OK,
                    self.dialect.stream_content_type(),
                    headers,
                    service,
                    stream_body(plan, self.flight),
                );
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            Rendered::Json { body, chunks } => {
                let generation = pace.first_token_delay
                    + pace.token_interval * chunks.min(u32::MAX as usize) as u32;
                pause(generation).await;
                self.flight.content_chunk();
                let body = if shape.cut_body {
                    body.slice(..body.len() / 2)
                } else {
                    body
                };
                let service = self
                    .arrival
                    .elapsed()
                    .saturating_sub(shape.slept + generation);
                build(
                    StatusCode::OK,
                    "application/json",
                    headers,
                    service,
                    once_body(body, self.flight, shape.cut_body),
                )
            }
        }
    }
}

/// Everything that determines a rendered reply, hashed (lean-mode cache key). Options are
/// not part of it: changing them clears the cache.
fn cache_key(format: WireFormat, r: &ChatRequest) -> u64 {
    let flags = [
        format as u8,
        u8::from(r.stream),
        u8::from(r.include_usage),
        u8::from(r.include_obfuscation),
    ];
    fnv1a(&[
        &flags,
        r.model.as_bytes(),
        b"\0",
        r.prompt.as_bytes(),
        b"\0",
        r.tool.as_deref().unwrap_or("\0").as_bytes(),
        &r.text_bytes.to_le_bytes(),
        &r.messages.to_le_bytes(),
        &r.max_tokens.map_or(u64::MAX, |m| m).to_le_bytes(),
    ])
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn headers_of(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len() + 4);
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn build(
    status: StatusCode,
    content_type: &'static str,
    headers: HeaderMap,
    service: Duration,
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    map.extend(headers);
    map.insert(
        HeaderName::from_static("x-mock-service-us"),
        HeaderValue::from(service.as_micros() as u64),
    );
    response
}

fn respond_rejection(
    base: &HeaderMap,
    rejection: Rejection,
    flight: Flight,
    arrival: Instant,
) -> Response {
    let mut headers = base.clone();
    headers.extend(headers_of(&rejection.headers));
    let body = once_body(rejection.body, flight, false);
    build(
        rejection.status,
        "application/json",
        headers,
        arrival.elapsed(),
        body,
    )
}
