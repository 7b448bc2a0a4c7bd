//! Response bodies: SSE framing, pacing, mid-stream faults, and completion tracking.
//!
//! The formats render a reply into ready-made frames; this module decides *when* each
//! frame goes out (first-token delay, token interval) and how a stream breaks (stall,
//! malformed line, in-stream error, abrupt cut), in one place for all four formats. Every
//! body owns the request's [`Flight`] guard, so "in flight" ends exactly when hyper has
//! taken the last byte, and a body dropped early is a client disconnect.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::record::Flight;

/// One encoded SSE event.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub bytes: Bytes,
    /// A content chunk: paced by the token delays, counted by `after_tokens`.
    pub content: bool,
}

impl Frame {
    pub(crate) fn content(bytes: Bytes) -> Frame {
        Frame {
            bytes,
            content: true,
        }
    }

    pub(crate) fn control(bytes: Bytes) -> Frame {
        Frame {
            bytes,
            content: false,
        }
    }
}

/// `data: <json>` followed by the blank line; Gemini terminates lines with CRLF.
pub(crate) fn data<T: Serialize + ?Sized>(payload: &T, crlf: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_slice(b"data: ");
    // Serializing plain structs and `Value`s into memory cannot fail.
    let _ = serde_json::to_writer(&mut buf, payload);
    buf.get_mut()
        .put_slice(if crlf { b"\r\n\r\n" } else { b"\n\n" });
    buf.into_inner().freeze()
}

/// `event: <name>` then `data: <json>` (Anthropic framing).
pub(crate) fn event<T: Serialize + ?Sized>(name: &str, payload: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_slice(b"event: ");
    buf.get_mut().put_slice(name.as_bytes());
    buf.get_mut().put_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut buf, payload);
    buf.get_mut().put_slice(b"\n\n");
    buf.into_inner().freeze()
}

/// A pre-encoded event taken verbatim (for frames whose exact bytes matter).
pub(crate) fn raw(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// How a stream breaks.
#[derive(Clone, Debug)]
pub(crate) enum StreamFault {
    Stall(Duration),
    Cut,
    /// Send these bytes; `end` closes the stream cleanly right after.
    Inject {
        bytes: Bytes,
        end: bool,
    },
}

/// Everything a streaming body needs.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub frames: Arc<[Frame]>,
    pub first_token_delay: Duration,
    pub token_interval: Duration,
    /// The fault and the number of content chunks to send before it.
    pub fault: Option<(usize, StreamFault)>,
}

struct Driver {
    frames: Arc<[Frame]>,
    position: usize,
    sent_content: usize,
    first_token_delay: Duration,
    token_interval: Duration,
    fault_at: usize,
    fault: Option<StreamFault>,
    flight: Flight,
    finished: bool,
}

/// Frame index before which a fault "after N content chunks" fires: before content chunk
/// N, or right after the last one when the reply is shorter.
fn fault_position(frames: &[Frame], after_tokens: usize) -> usize {
    let content: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.content)
        .map(|(i, _)| i)
        .collect();
    match content.get(after_tokens) {
        Some(&index) => index,
        None => content.last().map_or(1.min(frames.len()), |&last| last + 1),
    }
}

async fn pause(duration: Duration) {
    // A zero sleep still waits for the next timer tick; skip it.
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

type Item = Result<Bytes, io::Error>;

async fn step(mut d: Driver) -> Option<(Item, Driver)> {
    if d.finished {
        return None;
    }
    if d.position == d.fault_at {
        match d.fault.take() {
            Some(StreamFault::Stall(stall)) => pause(stall).await,
            Some(StreamFault::Cut) => {
                d.flight.complete();
                d.finished = true;
                // Let hyper flush what it already has, so the client really receives the
                // first N chunks before the connection is aborted.
                tokio::task::yield_now().await;
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "mock: cut mid-stream");
                return Some((Err(cut), d));
            }
            Some(StreamFault::Inject { bytes, end }) => {
                if end {
                    d.flight.complete();
                    d.finished = true;
                }
                return Some((Ok(bytes), d));
            }
            None => {}
        }
    }
    let Some(frame) = d.frames.get(d.position).cloned() else {
        d.flight.complete();
        return None;
    };
    if frame.content {
        let delay = if d.sent_content == 0 {
            d.first_token_delay
        } else {
            d.token_interval
        };
        pause(delay).await;
        d.sent_content += 1;
        d.flight.content_chunk();
    }
    d.position += 1;
    Some((Ok(frame.bytes), d))
}

/// A paced SSE body.
pub(crate) fn stream_body(plan: StreamPlan, flight: Flight) -> Body {
    let (fault_at, fault) = match plan.fault {
        Some((after, fault)) => (fault_position(&plan.frames, after), Some(fault)),
        None => (usize::MAX, None),
    };
    let driver = Driver {
        frames: plan.frames,
        position: 0,
        sent_content: 0,
        first_token_delay: plan.first_token_delay,
        token_interval: plan.token_interval,
        fault_at,
        fault,
        flight,
        finished: false,
    };
    Body::from_stream(futures::stream::unfold(driver, step))
}

enum Once {
    Pending(Bytes, Flight),
    Sent(Flight),
}

/// A one-piece body; `cut` aborts the connection after the piece instead of ending it.
pub(crate) fn once_body(bytes: Bytes, flight: Flight, cut: bool) -> Body {
    let stream = futures::stream::unfold(
        Some(Once::Pending(bytes, flight)),
        move |state| async move {
            match state? {
                Once::Pending(bytes, flight) => Some((Ok(bytes), Some(Once::Sent(flight)))),
                Once::Sent(mut flight) => {
                    flight.complete();
                    if cut {
                        tokio::task::yield_now().await;
                        let cut =
                            io::Error::new(io::ErrorKind::ConnectionAborted, "mock: cut mid-body");
                        Some((Err(cut), None))
                    } else {
                        None
                    }
                }
            }
        },
    );
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(kinds: &str) -> Vec<Frame> {
        kinds
            .chars()
            .map(|c| {
                if c == 'c' {
                    Frame::content(Bytes::new())
                } else {
                    Frame::control(Bytes::new())
                }
            })
            .collect()
    }

    #[test]
    fn fault_positions() {
        let f = frames("sccctt");
        assert_eq!(fault_position(&f, 0), 1);
        assert_eq!(fault_position(&f, 2), 3);
        assert_eq!(fault_position(&f, 3), 4, "after the last content chunk");
        assert_eq!(fault_position(&f, 99), 4);
        assert_eq!(
            fault_position(&frames("stt"), 5),
            1,
            "no content: after the first frame"
        );
    }

    #[test]
    fn framing() {
        let value = serde_json::json!({"a": 1});
        assert_eq!(&data(&value, false)[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&data(&value, true)[..], b"data: {\"a\":1}\r\n\r\n");
        assert_eq!(
            &event("ping", &value)[..],
            b"event: ping\ndata: {\"a\":1}\n\n"
        );
    }
}
