//! Test support for adapters: a whole SSE stream through the real framing, a decoder and
//! the accumulator, as `call.rs` does it, without a network.

use super::accumulate::StreamAccumulator;
use super::sse::SseParser;
use super::{ProviderError, StreamDecoder};

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
