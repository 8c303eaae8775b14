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
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};

/// The first byte of a compressed payload.
const MAGIC: u8 = b'Z';
/// The header: magic and dictionary id.
const HEADER: usize = 5;
/// zstd's level. With the store's own dictionary, level 1 stores the throughput corpus in
/// 1.40 KB per version against level 3's 1.31 KB, and compressing (the largest share of a
/// pull's CPU) takes about half the time: `scripts/bench-pull` 1.85 s against 2.26 s.
const LEVEL: i32 = 1;
/// Payloads shorter than this are kept as text (a frame's own overhead would eat the gain).
const MIN_COMPRESSED: usize = 96;
/// The largest decoded payload accepted (an API body is capped far below this).
pub(crate) const MAX_DECODED: usize = 256 << 20;
/// Payloads a dictionary is trained from (or fewer, when they come to [`TRAIN_BYTES`]).
pub(crate) const TRAIN_PAYLOADS: usize = 2000;
/// Bytes of samples a dictionary is trained from, at most (plus one payload). Training costs
/// about its samples' size: 8 MB took 7 % of a cold pull's CPU for a dictionary no better
/// than 3 MB's (bench-pull: 1.37 KB per version either way).
const TRAIN_BYTES: usize = 3 << 20;
/// A dictionary's size (zstd's guidance: about 100× smaller than the samples).
const DICTIONARY_BYTES: usize = 64 << 10;

/// A dictionary: its id in its store, its bytes, and a fingerprint of them that keys the
/// per-thread compression contexts (two stores in one process each have a dictionary 1).
#[derive(Clone)]
pub(crate) struct Dictionary {
    id: u32,
    key: u64,
    bytes: Arc<[u8]>,
}

impl Dictionary {
    /// Its id in its store.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    fn new(id: u32, bytes: Arc<[u8]>) -> Self {
        // FNV-1a, never 0 (0 keys the context without a dictionary).
        let key = bytes
            .iter()
            .fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3)
            })
            .max(1);
        Dictionary { id, key, bytes }
    }
}

thread_local! {
    /// One compression context per thread (and dictionary): making one costs more than
    /// compressing a payload.
    static COMPRESSOR: RefCell<Option<(u64, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSORS: RefCell<HashMap<u64, zstd::bulk::Decompressor<'static>>> = RefCell::new(HashMap::new());
}

/// The store's dictionaries: the one new payloads use, every one known by id, and the samples
/// the first is trained from.
#[derive(Default)]
pub(crate) struct Dictionaries {
    current: Option<Dictionary>,
    known: HashMap<u32, Dictionary>,
    samples: Vec<u8>,
    sizes: Vec<usize>,
}

impl std::fmt::Debug for Dictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionaries")
            .field("current", &self.current.as_ref().map(|d| d.id))
            .field("known", &self.known.len())
            .field("samples", &self.sizes.len())
            .finish()
    }
}

impl Dictionaries {
    /// Every dictionary of the store; the newest is the current one.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut d = Dictionaries::default();
        let mut stmt = conn.prepare("SELECT id, bytes FROM dictionaries ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        for row in rows {
            let (id, bytes) = row?;
            if let Ok(id) = u32::try_from(id) {
                d.add(id, bytes.into());
            }
        }
        Ok(d)
    }

    /// Records the dictionary stored with `id`; the newest becomes the current one.
    pub(crate) fn add(&mut self, id: u32, bytes: Arc<[u8]>) {
        let d = Dictionary::new(id, bytes);
        if self.current.as_ref().is_none_or(|c| c.id < id) {
            self.current = Some(d.clone());
        }
        self.known.insert(id, d);
    }

    /// The dictionary new payloads are compressed with.
    pub(crate) fn current(&self) -> Option<Dictionary> {
        self.current.clone()
    }

    /// Keeps `text` as a training sample while there is no dictionary yet.
    pub(crate) fn sample(&mut self, text: &str) {
        if self.current.is_none() && !self.enough() && text.len() >= MIN_COMPRESSED {
            self.samples.extend_from_slice(text.as_bytes());
            self.sizes.push(text.len());
        }
    }

    /// [`TRAIN_PAYLOADS`] samples, or [`TRAIN_BYTES`] of them.
    fn enough(&self) -> bool {
        self.sizes.len() >= TRAIN_PAYLOADS || self.samples.len() >= TRAIN_BYTES
    }

    /// Trains the first dictionary once enough samples were kept: its bytes (a failed
    /// training is logged; compression goes on without one and samples are kept again).
    pub(crate) fn train(&mut self) -> Option<Vec<u8>> {
        if self.current.is_some() || !self.enough() {
            return None;
        }
        let samples = std::mem::take(&mut self.samples);
        let sizes = std::mem::take(&mut self.sizes);
        match zstd::dict::from_continuous(&samples, &sizes, DICTIONARY_BYTES) {
            Ok(d) => Some(d),
            Err(e) => {
                // Payloads go on compressed without one; new samples are kept for another try.
                tracing::warn!(error = %e, "Training the store's compression dictionary failed.");
                None
            }
        }
    }

    /// The dictionary `id` if this process knows it.
    pub(crate) fn known(&self, id: u32) -> Option<Dictionary> {
        self.known.get(&id).cloned()
    }

    /// Records a dictionary another process stored, without making it the current one.
    pub(crate) fn remember(&mut self, id: u32, bytes: Arc<[u8]>) -> Dictionary {
        let d = Dictionary::new(id, bytes);
        self.known.insert(id, d.clone());
        d
    }

    /// The dictionary `id`, from memory or (one another process trained) from the table.
    pub(crate) fn get(&mut self, id: u32, conn: &Connection) -> Option<Dictionary> {
        if let Some(d) = self.known.get(&id) {
            return Some(d.clone());
        }
        let bytes: Vec<u8> = conn
            .query_row(
                "SELECT bytes FROM dictionaries WHERE id = ?1",
                [i64::from(id)],
                |r| r.get(0),
            )
            .optional()
            .ok()??;
        // Known now, without becoming the current one (another process's).
        let d = Dictionary::new(id, bytes.into());
        self.known.insert(id, d.clone());
        Some(d)
    }
}

/// `text` as stored: compressed (with `dictionary`, when the store has one), or as text when
/// compressing would not pay (or failed, which loses nothing: the text is stored instead).
pub(crate) fn encode(text: &str, dictionary: Option<&Dictionary>) -> Value {
    if text.len() < MIN_COMPRESSED {
        return Value::Text(text.to_owned());
    }
    let (id, key) = dictionary.map_or((0, 0), |d| (d.id, d.key));
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(have, _)| *have != key) {
            let made = match dictionary {
                Some(d) => zstd::bulk::Compressor::with_dictionary(LEVEL, &d.bytes),
                None => zstd::bulk::Compressor::new(LEVEL),
            };
            // With the frame's checksum: a damaged payload fails to decode instead of
            // decoding to other text.
            *c = made.ok().and_then(|mut made| {
                made.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                    .ok()?;
                Some((key, made))
            });
        }
        let (_, c) = c.as_mut()?;
        let mut out = Vec::with_capacity(HEADER + zstd::zstd_safe::compress_bound(text.len()));
        out.push(MAGIC);
        out.extend_from_slice(&id.to_le_bytes());
        let mut frame = c.compress(text.as_bytes()).ok()?;
        out.append(&mut frame);
        Some(out)
    });
    match compressed {
        Some(blob) if blob.len() < text.len() => Value::Blob(blob),
        _ => Value::Text(text.to_owned()),
    }
}

/// One version's payloads as stored, compressed with `dictionary`; while the store has none
/// they are kept as training samples (whoever compresses, samples: the pipeline's reading tasks,
/// a commit, a copy; both backends).
pub(crate) fn encode_version(
    dictionaries: &std::sync::Mutex<Dictionaries>,
    dictionary: Option<&Dictionary>,
    normalized: &str,
    raw: &str,
) -> crate::EncodedVersion {
    if dictionary.is_none() {
        let mut d = dictionaries.lock().unwrap_or_else(|e| e.into_inner());
        d.sample(raw);
        d.sample(normalized);
    }
    crate::EncodedVersion {
        stored_normalized: encode(normalized, dictionary),
        stored_raw: encode(raw, dictionary),
    }
}

/// The id of the dictionary a payload stored as bytes was compressed with (`None`: text, or
/// compressed without one), read from its header without decoding it.
pub(crate) fn dictionary_id(stored: &[u8]) -> Option<u32> {
    let header = stored.get(..HEADER)?;
    let [magic, d0, d1, d2, d3] = <[u8; HEADER]>::try_from(header).ok()?;
    let id = u32::from_le_bytes([d0, d1, d2, d3]);
    (magic == MAGIC && id != 0).then_some(id)
}

/// A payload as bytes, for a backend whose column holds bytes only (PostgreSQL's BYTEA): a
/// compressed payload as it is (it starts with [`MAGIC`]), text as its UTF-8 (JSON text never
/// starts with `Z`).
pub(crate) fn into_bytes(stored: Value) -> Vec<u8> {
    match stored {
        Value::Blob(b) => b,
        Value::Text(t) => t.into_bytes(),
        // `encode` makes only text and blobs.
        Value::Null | Value::Integer(_) | Value::Real(_) => Vec::new(),
    }
}

/// [`decode`] of a payload stored as bytes ([`into_bytes`]).
pub(crate) fn decode_bytes(
    stored: &[u8],
    dictionary: impl FnOnce(u32) -> Option<Dictionary>,
) -> Result<String, String> {
    if stored.first() == Some(&MAGIC) {
        decode(ValueRef::Blob(stored), dictionary)
    } else {
        decode(ValueRef::Text(stored), dictionary)
    }
}

/// The text of a stored payload, or what is wrong with it.
pub(crate) fn decode(
    stored: ValueRef<'_>,
    dictionary: impl FnOnce(u32) -> Option<Dictionary>,
) -> Result<String, String> {
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
            let id = u32::from_le_bytes([d0, d1, d2, d3]);
            let bytes = match id {
                0 => None,
                id => Some(dictionary(id).ok_or_else(|| {
                    format!(
                        "the payload needs compression dictionary {id}, which this store does not have"
                    )
                })?),
            };
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
            let key = bytes.as_ref().map_or(0, |d| d.key);
            let bytes = DECOMPRESSORS.with(|all| {
                let mut all = all.borrow_mut();
                if !all.contains_key(&key) {
                    let made = match &bytes {
                        Some(d) => zstd::bulk::Decompressor::with_dictionary(&d.bytes),
                        None => zstd::bulk::Decompressor::new(),
                    }
                    .map_err(|e| format!("no zstd decompression context could be made: {e}"))?;
                    // A context holds its dictionary's tables: a thread keeps a few.
                    if all.len() >= 8 {
                        all.clear();
                    }
                    all.insert(key, made);
                }
                let d = all
                    .get_mut(&key)
                    .ok_or_else(|| "no zstd decompression context".to_owned())?;
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
        let v = encode(text, None);
        let r = match &v {
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            _ => panic!("a payload is text or a blob"),
        };
        decode(r, |_| None).unwrap()
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
        let Value::Blob(b) = encode(&json, None) else {
            panic!("compressed")
        };
        assert!(b.len() * 5 < json.len(), "{} of {}", b.len(), json.len());
        // Short ones stay text.
        assert!(matches!(encode("{}", None), Value::Text(_)));
        assert_eq!(round(""), "");
    }

    #[test]
    fn damaged_payloads_are_named_errors() {
        let json = "{\"x\":\"".to_owned() + &"abc".repeat(100) + "\"}";
        let Value::Blob(good) = encode(&json, None) else {
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
            let e = decode(ValueRef::Blob(&blob), |_| None);
            assert!(e.is_err(), "{name}: {e:?}");
        }
        assert!(decode(ValueRef::Null, |_| None).is_err());
        assert!(decode(ValueRef::Text(&[0xff, 0xfe]), |_| None).is_err());
    }
}
