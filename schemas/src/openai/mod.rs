//! OpenAI's wire types, in one place: what the HTTP edge reads and writes, what the CLI
//! prints, and what batch files hold.
//!
//! Why here and typed: OpenAI's shapes are llmq's contract with every OpenAI client, so
//! they are written once and checked by their serde shape, instead of built by hand with
//! `json!` where they are sent (a field spelled differently in one place is a client that
//! breaks). The request types keep every field they do not know (`extra`), so a client
//! can use a new OpenAI parameter the day it ships: llmq forwards it untouched to
//! OpenAI-compatible providers.
//!
//! - [`request`]: the chat-completions body a job carries ([`ChatRequest`]: messages,
//!   tools, sampling settings).
//! - [`chat_request`]: `POST /v1/chat/completions` as a client sends it
//!   ([`ChatCompletionRequest`]: the model and how to deliver the answer, around a
//!   [`ChatRequest`]).
//! - [`completion`]: the `chat.completion` answer; [`chunk`]: a streamed
//!   `chat.completion.chunk`.
//! - [`error`]: the error body every failed request gets; [`model`]: `/v1/models`.
//! - [`batch`]: the Batch API's input and output file lines.

pub mod batch;
pub mod chat_request;
pub mod chunk;
pub mod completion;
pub mod error;
pub mod model;
pub mod request;

pub use batch::{BatchError, BatchInputLine, BatchOutputLine, BatchResponse, BatchResponseBody};
pub use chat_request::{ChatCompletionRequest, StreamOptions};
pub use chunk::{ChatCompletionChunk, ChunkChoice, ChunkDelta, ChunkFunction, ChunkToolCall};
pub use completion::{
    ChatCompletion, Choice, CompletionTokensDetails, CompletionUsage, PromptTokensDetails,
    ResponseMessage,
};
pub use error::{ErrorBody, ErrorObject};
pub use model::{Model, ModelList};
pub use request::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, NamedFunction,
    NamedToolChoice, Role, Stop, Tool, ToolCall, ToolCallDelta, ToolChoice,
};
