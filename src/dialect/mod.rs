//! The two wire dialects (OpenAI Chat Completions, Anthropic Messages): SSE framing and conversion between them.
//!
//! Everything here is a pure function (or a small state machine) over plain data: no I/O, no
//! hyper types. The gateway calls the `*_request_to_*` functions before sending upstream and the
//! response, stream and error translators on the way back. Same-dialect traffic never comes here
//! (it is forwarded byte for byte with only `model` swapped).

pub mod anthropic;
pub mod error;
pub(crate) mod json_out;
pub(crate) mod loose;
pub mod openai;
mod request_parts;
pub mod request_to_anthropic;
pub mod request_to_openai;
pub mod response;
pub(crate) mod scan;
pub mod sse;
pub mod stream_to_anthropic;
pub mod stream_to_openai;
mod tools;

pub use error::{
    anthropic_error_body, anthropic_error_frame, anthropic_error_to_openai, openai_error_body, openai_error_frame,
    openai_error_to_anthropic, ConvertError,
};
pub use loose::Checked;
pub use request_to_anthropic::{openai_request_to_anthropic, OpenAiRequest, DROPPED_FIELDS};
pub use request_to_openai::{adapt_for_legacy_backend, anthropic_request_to_openai};
pub use response::{anthropic_response_to_openai, anthropic_response_to_openai_at, openai_response_to_anthropic};
pub use sse::{anthropic_frame, openai_done, openai_frame, SseEvent, SseParser, StreamFailure};
pub use stream_to_anthropic::OpenAiToAnthropicStream;
pub use stream_to_openai::AnthropicToOpenAiStream;
