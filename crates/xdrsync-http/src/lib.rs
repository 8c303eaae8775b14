//! The HTTP plumbing every xdrsync client shares — the token client (`xdrsync-auth`), the API
//! clients (`xdrsync-api-client`) and the sinks' receivers (`xdrsync-sinks`) — so a 429 means
//! the same thing, a `Retry-After` is capped the same way and a hostile body is refused at the
//! same size everywhere, without the sinks depending on the Entra or Defender clients.

mod body;
pub mod retry;

pub use body::{BodyError, DEFAULT_MAX_BODY, read_body};
pub use retry::{MAX_RETRY_AFTER, RetryAction, classify, jittered_backoff, retry_after};
