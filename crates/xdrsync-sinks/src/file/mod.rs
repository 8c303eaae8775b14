//! The file sink: NDJSON with size and time rotation, or the Hello World seed's
//! `Latest Incidents <timestamp>.json` (one JSON array per delivery).
//!
//! Exactly once, in every format: before a batch is written the sink records in the store
//! what it is about to write (file, length before, length after, last `seq`); after the fsync
//! it records the new position and clears that. A restart that finds the record looks at the
//! file: all there → the position moves past the batch; partly there → the partial batch is
//! cut off and written again. Readers never see half a line (the NDJSON sink writes whole
//! lines and cuts a torn tail) or half an array (the array file is written to a temporary
//! file, fsynced and renamed). Two sinks must not share one file: each keeps its own record.

mod config;
mod sink;

pub use config::{FileConfig, FileMode, Validated};
pub use sink::{
    FileSink, NdjsonSink, json_array, latest_incidents_file_name, ndjson_line, private_dir,
    write_atomic, write_json_array,
};

#[cfg(test)]
mod tests;
