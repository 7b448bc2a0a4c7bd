//! Test support for adapters: a whole SSE stream through the real framing, a decoder and
//! the accumulator, as `call.rs` does it, without a network.

use llmq_schemas::{ChatRequest, ErrorType};
use reqwest::header::HeaderMap;

use super::accumulate::StreamAccumulator;
use super::sse::SseParser;
use super::{Adapter, CallSpec, ProviderError, StreamDecoder};
use crate::config::InvalidToolArguments;

/// A call of `request` to `upstream_model`, without a default token cap or a key.
pub fn spec<'a>(request: &'a ChatRequest, upstream_model: &'a str, stream: bool) -> CallSpec<'a> {
    CallSpec {
        request,
        upstream_model,
        stream,
        default_max_tokens: None,
        invalid_tool_arguments: InvalidToolArguments::Fail,
        key: None,
    }
}

/// Checks that `adapter` classifies each error response `(status, body, class)` as
/// `class`, and keeps the status.
pub fn assert_classifies(adapter: &dyn Adapter, cases: &[(u16, Vec<u8>, ErrorType)]) {
    for (status, body, class) in cases {
        let err = adapter.classify_error(*status, &HeaderMap::new(), body);
        assert_eq!(
            err.class,
            *class,
            "{status} {}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(err.status, Some(*status));
    }
}

/// Feeds `text` in `chunk`-byte pieces (any boundary must work), decodes every event and
/// accumulates the items (those an event yielded before its error too, as `call.rs`
/// does); returns the decoder's verdict at the end of the body, or the first decode
/// error, with what was accumulated. Also checks that no event follows the stream's end
/// marker.
pub fn decode_stream(
    mut decoder: Box<dyn StreamDecoder>,
    text: &[u8],
    chunk: usize,
) -> (Result<(), ProviderError>, StreamAccumulator) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in text.chunks(chunk.max(1)) {
        parser.feed(piece, &mut events).unwrap();
    }
    parser.finish(&mut events).unwrap();
    let mut acc = StreamAccumulator::new();
    let mut items = Vec::new();
    for event in &events {
        assert!(
            !decoder.is_done(),
            "an event after the end marker: {event:?}"
        );
        let decoded = decoder.decode(event, &mut items);
        for item in items.drain(..) {
            acc.apply(item);
        }
        if let Err(err) = decoded {
            return (Err(err), acc);
        }
    }
    (decoder.finish(), acc)
}
