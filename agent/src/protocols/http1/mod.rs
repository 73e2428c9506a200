//! HTTP/1.x: message heads (via `httparse`) and a per-direction stream reassembler that
//! frames messages (Content-Length, chunked, until-close) across reads, pipelining and
//! capture gaps.

mod head;
mod stream;

pub use head::{Framing, HeadParse, RequestHead, ResponseHead, parse_request_head, parse_response_head};
pub use stream::{HalfStream, Head, Message, Segment, Side};
