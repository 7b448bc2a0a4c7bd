//! Server-sent events framing, shared by every streaming adapter.
//!
//! Written to the WHATWG event-stream rules rather than split on `\n\n`: providers and
//! proxies send CRLF, multi-line `data:`, comments and keep-alives, and a chunk boundary
//! can fall anywhere, including inside a UTF-8 character.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The most a single event may hold: a stream that never ends an event is broken, and
/// must not grow the worker's memory without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event exceeded {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("event data is not UTF-8")]
    NotUtf8,
}

/// Incremental parser: feed byte chunks as they arrive, collect complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    /// A `\r` ended the last chunk: a `\n` starting the next one belongs to it.
    pending_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk; complete events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() {
            match chunk[i] {
                b'\n' | b'\r' => {
                    let line_end = i;
                    if chunk[i] == b'\r' {
                        if i + 1 < chunk.len() {
                            if chunk[i + 1] == b'\n' {
                                i += 1;
                            }
                        } else {
                            self.pending_cr = true;
                        }
                    }
                    self.line_end(&chunk[start..line_end], out)?;
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buffer.extend_from_slice(&chunk[start..]);
        if self.buffer.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    /// The body ended: dispatches an event that lacked only its closing blank line.
    /// (Servers end with one, but some proxies and recordings drop it; an event that is
    /// really cut short fails when its data is decoded.)
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.pending_cr = false;
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            self.line(&line, out)?;
        }
        self.line(b"", out)
    }

    /// A line ended in the current chunk; `tail` is its part in that chunk, the rest was
    /// buffered from earlier chunks.
    fn line_end(&mut self, tail: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.buffer.is_empty() {
            return self.line(tail, out);
        }
        let mut line = std::mem::take(&mut self.buffer);
        line.extend_from_slice(tail);
        self.line(&line, out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line[0] == b':' {
            return Ok(()); // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        self.field(field, value)
    }

    /// A blank line: the event collected so far is complete (one without data is not
    /// dispatched).
    fn dispatch(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.has_data {
            let data =
                String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::NotUtf8)?;
            out.push(SseEvent {
                event: self.event.take(),
                data,
            });
        }
        self.event = None;
        self.has_data = false;
        Ok(())
    }

    fn field(&mut self, field: &[u8], value: &[u8]) -> Result<(), SseError> {
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
            }
            b"event" => {
                self.event = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {} // id, retry and unknown fields do not matter to a one-shot client
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], chunk: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            parser.feed(piece, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn openai_style_stream_in_any_chunking() {
        let input =
            b"data: {\"a\":1}\n\ndata: {\"b\":\"\xc3\xa9\"}\n\n: keep-alive\n\ndata: [DONE]\n\n";
        for chunk in 1..input.len() {
            let events = parse_in_chunks(input, chunk);
            let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(
                data,
                ["{\"a\":1}", "{\"b\":\"é\"}", "[DONE]"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn event_names_crlf_and_multiline_data() {
        let input =
            b"event: message_start\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\nevent: ping\rdata: {}\r\r";
        for chunk in 1..input.len() {
            let events = parse_in_chunks(input, chunk);
            assert_eq!(events.len(), 2, "chunk {chunk}");
            assert_eq!(events[0].event.as_deref(), Some("message_start"));
            assert_eq!(events[0].data, "{\"x\":\n1}");
            assert_eq!(events[1].event.as_deref(), Some("ping"));
        }
    }

    #[test]
    fn the_anthropic_fixture_parses_into_its_events() {
        let input = include_bytes!("../../tests/fixtures/anthropic/basic_response.txt");
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in input.chunks(7) {
            parser.feed(piece, &mut events).unwrap();
        }
        parser.finish(&mut events).unwrap();
        let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(names.contains(&"ping"));
    }

    #[test]
    fn an_unterminated_last_event_is_flushed_at_the_end_and_oversized_events_fail() {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser.feed(b"data: {\"cut", &mut out).unwrap();
        assert!(out.is_empty());
        parser.finish(&mut out).unwrap();
        assert_eq!(out[0].data, "{\"cut");
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        let mut parser = SseParser::new();
        assert_eq!(parser.feed(&big, &mut out), Err(SseError::TooLarge));
    }
}
