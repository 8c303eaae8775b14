//! Reading a response body within a bound.

/// The largest response body read from a server by default (`[sync] max_response_mib`).
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// It was larger than the limit (bytes).
    TooLarge(usize),
    /// The connection failed while reading it.
    Transport(reqwest::Error),
}

/// Reads a response body, chunk by chunk, refusing one larger than `max` bytes before it is
/// in memory (a `Content-Length` over the limit is refused before reading anything).
pub async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
