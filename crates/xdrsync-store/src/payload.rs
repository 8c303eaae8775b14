//! A version's payloads (its raw JSON and its normalized JSON), compressed.
//!
//! The raw JSON of an incident is the whole incident as the API sent it, every alert and its
//! evidence included: 9 KB on average, stored again for every version. JSON compresses well,
//! so each payload is stored as a BLOB: the byte `Z`, a dictionary id (u32, little endian; 0:
//! none), then one zstd frame (which records its decoded size). A payload written as TEXT (by
//! an earlier release, or too short to gain anything) is read as it is: a store of an earlier
//! release needs no rewrite, and every row of it stays readable.
//!
//! Reading checks everything and trusts nothing: a BLOB that is not ours, an unknown
//! dictionary, a frame that does not decode or decodes to another size, a decoded size over
//! [`MAX_DECODED`], or text that is not UTF-8 is an error the caller reports with the version
//! it belongs to — never a panic, never silently different JSON.

use std::cell::RefCell;

use rusqlite::types::{Value, ValueRef};

/// The first byte of a compressed payload.
const MAGIC: u8 = b'Z';
/// The header: magic and dictionary id.
const HEADER: usize = 5;
/// zstd's level: 3 (its default) compresses JSON about as well as 9 at a third of the time.
const LEVEL: i32 = 3;
/// Payloads shorter than this are kept as text (a frame's own overhead would eat the gain).
const MIN_COMPRESSED: usize = 96;
/// The largest decoded payload accepted (an API body is capped far below this).
pub(crate) const MAX_DECODED: usize = 256 << 20;

thread_local! {
    /// One compression context per thread: making one costs more than compressing a payload.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `text` as stored: compressed, or as text when compressing would not pay (or failed, which
/// loses nothing: the text is stored instead).
pub(crate) fn encode(text: &str) -> Value {
    if text.len() < MIN_COMPRESSED {
        return Value::Text(text.to_owned());
    }
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            // With the frame's checksum: a damaged payload fails to decode instead of
            // decoding to other text.
            *c = zstd::bulk::Compressor::new(LEVEL).ok().and_then(|mut c| {
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                    .ok()?;
                Some(c)
            });
        }
        let c = c.as_mut()?;
        let mut out = Vec::with_capacity(HEADER + zstd::zstd_safe::compress_bound(text.len()));
        out.push(MAGIC);
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut frame = c.compress(text.as_bytes()).ok()?;
        out.append(&mut frame);
        Some(out)
    });
    match compressed {
        Some(blob) if blob.len() < text.len() => Value::Blob(blob),
        _ => Value::Text(text.to_owned()),
    }
}

/// The text of a stored payload, or what is wrong with it.
pub(crate) fn decode(stored: ValueRef<'_>) -> Result<String, String> {
    match stored {
        ValueRef::Text(t) => {
            String::from_utf8(t.to_vec()).map_err(|e| format!("the payload is not UTF-8 text: {e}"))
        }
        ValueRef::Blob(b) => {
            let (header, frame) = b
                .split_at_checked(HEADER)
                .ok_or_else(|| format!("a compressed payload of {} bytes is too short", b.len()))?;
            let [magic, d0, d1, d2, d3] = <[u8; HEADER]>::try_from(header)
                .map_err(|_| "a compressed payload without its header".to_owned())?;
            if magic != MAGIC {
                return Err(format!(
                    "the payload is not in a format this xdrsync knows (first byte {magic:#04x})"
                ));
            }
            let dictionary = u32::from_le_bytes([d0, d1, d2, d3]);
            if dictionary != 0 {
                return Err(format!(
                    "the payload needs compression dictionary {dictionary}, which this store does not have"
                ));
            }
            let size = match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(n)) => usize::try_from(n).unwrap_or(usize::MAX),
                Ok(None) => return Err("the compressed payload does not record its size".into()),
                Err(_) => return Err("the compressed payload is not a zstd frame".into()),
            };
            if size > MAX_DECODED {
                return Err(format!(
                    "the compressed payload claims {size} bytes, more than the {MAX_DECODED} accepted"
                ));
            }
            let bytes = DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                let d = d
                    .as_mut()
                    .ok_or_else(|| "no zstd decompression context could be made".to_owned())?;
                d.decompress(frame, size)
                    .map_err(|e| format!("the compressed payload does not decode: {e}"))
            })?;
            if bytes.len() != size {
                return Err(format!(
                    "the compressed payload decoded to {} bytes, not the {size} it records",
                    bytes.len()
                ));
            }
            String::from_utf8(bytes)
                .map_err(|e| format!("the decoded payload is not UTF-8 text: {e}"))
        }
        ValueRef::Null => Err("the payload is missing (NULL)".into()),
        ValueRef::Integer(_) | ValueRef::Real(_) => Err("the payload is a number, not JSON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> String {
        let v = encode(text);
        let r = match &v {
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            _ => panic!("a payload is text or a blob"),
        };
        decode(r).unwrap()
    }

    #[test]
    fn json_round_trips_byte_for_byte_and_shrinks() {
        let json = format!(
            "{{\"id\":\"1\",\"alerts\":[{}]}}",
            (0..50)
                .map(|i| format!(
                    "{{\"id\":\"da{i}\",\"title\":\"Suspicious PowerShell é ✓\",\"n\":1.50}}"
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(round(&json), json);
        let Value::Blob(b) = encode(&json) else {
            panic!("compressed")
        };
        assert!(b.len() * 5 < json.len(), "{} of {}", b.len(), json.len());
        // Short ones stay text.
        assert!(matches!(encode("{}"), Value::Text(_)));
        assert_eq!(round(""), "");
    }

    #[test]
    fn damaged_payloads_are_named_errors() {
        let json = "{\"x\":\"".to_owned() + &"abc".repeat(100) + "\"}";
        let Value::Blob(good) = encode(&json) else {
            panic!("compressed")
        };
        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'Q';
        let mut dict = good.clone();
        dict[1] = 7;
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0xff;
        let truncated = good[..good.len() - 4].to_vec();
        let mut huge = good.clone();
        // The frame header's content size, rewritten to claim 2^40 bytes, is refused by size
        // or does not decode: either way an error, never an allocation of that size.
        huge.truncate(HEADER + 4);
        for (name, blob) in [
            ("magic", wrong_magic),
            ("dictionary", dict),
            ("flipped", flipped),
            ("truncated", truncated),
            ("header only", huge),
            ("empty", Vec::new()),
        ] {
            let e = decode(ValueRef::Blob(&blob));
            assert!(e.is_err(), "{name}: {e:?}");
        }
        assert!(decode(ValueRef::Null).is_err());
        assert!(decode(ValueRef::Text(&[0xff, 0xfe])).is_err());
    }
}
