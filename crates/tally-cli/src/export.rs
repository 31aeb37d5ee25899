//! `tally export`: stored events out of a collector, as NDJSON or Parquet.
//!
//! Reads `GET /v1/export` (NDJSON in corrected-time order, streamed by the
//! collector in keyset pages) line by line and writes either the lines
//! themselves (`--format ndjson`, byte for byte what the collector sent) or
//! Parquet (`--format parquet`) in row groups of `--row-group-rows`
//! events, so memory stays bounded by one row group however many events
//! the window holds. The file is written as `FILE.partial` and renamed to
//! `FILE` only once the stream ended cleanly: a cut connection never
//! leaves a file that looks complete. `--out -` writes to stdout instead
//! (a reader downstream sees a cut stream end early; the exit code is
//! then non-zero), and the summary goes to stderr only.
//!
//! # Parquet schema
//!
//! | column | type | from the line |
//! |---|---|---|
//! | `message_id` | `BYTE_ARRAY (STRING)` | `messageId` |
//! | `type` | `BYTE_ARRAY (STRING)` | `type` |
//! | `event` | optional `BYTE_ARRAY (STRING)` | `event` of a track, `name` of a page or screen |
//! | `user_id`, `anonymous_id` | optional `BYTE_ARRAY (STRING)` | `userId`, `anonymousId` (empty counts as absent) |
//! | `install_id`, `seq`, `session_id` | optional `BYTE_ARRAY (STRING)`, `INT64` | `context.tally` |
//! | `timestamp` | `INT64 (TIMESTAMP(MILLIS, UTC))` | the corrected capture time |
//! | `received_at` | `INT64 (TIMESTAMP(MILLIS, UTC))` | `receivedAt` |
//! | `properties` | optional `BYTE_ARRAY (JSON)` | `properties`, the JSON text as received |
//! | `context` | optional `BYTE_ARRAY (JSON)` | `context`, the JSON text as received |
//!
//! NDJSON is the lossless format (traits, integrations and unknown members
//! are only there); Parquet holds the columns analyses filter and group by.
//! Columns are zstd-compressed.

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Deserialize;
use serde_json::value::RawValue;
use tally_proto::{parse_timestamp, Message};

/// The header in which the collector announces the events of the window.
const EVENTS_HEADER: &str = "tally-export-events";

/// Events per Parquet row group by default: about 40 MB of column data
/// for SDK-sized events, within the 10k–1M rows readers handle well, and
/// the bound on the memory `tally export` uses.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// The Parquet schema (see the module doc).
pub const PARQUET_SCHEMA: &str = "message tally_event {
    REQUIRED BYTE_ARRAY message_id (STRING);
    REQUIRED BYTE_ARRAY type (STRING);
    OPTIONAL BYTE_ARRAY event (STRING);
    OPTIONAL BYTE_ARRAY user_id (STRING);
    OPTIONAL BYTE_ARRAY anonymous_id (STRING);
    OPTIONAL BYTE_ARRAY install_id (STRING);
    OPTIONAL INT64 seq;
    OPTIONAL BYTE_ARRAY session_id (STRING);
    REQUIRED INT64 timestamp (TIMESTAMP(MILLIS, true));
    REQUIRED INT64 received_at (TIMESTAMP(MILLIS, true));
    OPTIONAL BYTE_ARRAY properties (JSON);
    OPTIONAL BYTE_ARRAY context (JSON);
}";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One stored message per line, as the collector sends it.
    Ndjson,
    /// Apache Parquet, one row per event, zstd-compressed: message_id, type,
    /// event, user_id, anonymous_id, install_id, seq, session_id, timestamp
    /// (corrected), received_at, properties and context (JSON text).
    Parquet,
}

/// Arguments of `tally export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    collector: crate::client::Collector,
    /// Output format
    #[arg(long, value_enum)]
    format: Format,
    /// Output file (written as FILE.partial, renamed when complete); `-`
    /// writes to stdout
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// First corrected time to export, RFC 3339, inclusive [default: the beginning]
    #[arg(long, value_name = "RFC3339")]
    from: Option<String>,
    /// End of the window, RFC 3339, exclusive [default: now]
    #[arg(long, value_name = "RFC3339")]
    to: Option<String>,
    /// Only the events this source sent (a write key id) [default: every source]
    #[arg(long, value_name = "KEY_ID")]
    source: Option<String>,
    /// Events per Parquet row group (bounds memory)
    #[arg(long, default_value_t = DEFAULT_ROW_GROUP_ROWS, value_name = "N")]
    row_group_rows: usize,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    for (name, value) in [("--from", &args.from), ("--to", &args.to)] {
        if let Some(v) = value {
            if parse_timestamp(v).is_none() {
                bail!("{name} {v:?} is not an RFC 3339 date-time");
            }
        }
    }
    if args.row_group_rows == 0 {
        bail!("--row-group-rows must be at least 1");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        // Counting the window comes first; the body then streams for as
        // long as it takes.
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .build()
        .into();
    let token = args.collector.token()?;
    let url = args.collector.url("/v1/export");
    let mut request = agent
        .get(&url)
        .query("format", "ndjson")
        .header("authorization", format!("Bearer {token}"));
    if let Some(from) = &args.from {
        request = request.query("from", from);
    }
    if let Some(to) = &args.to {
        request = request.query("to", to);
    }
    if let Some(source) = &args.source {
        request = request.query("source", source);
    }
    let response = request
        .call()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.into_body().read_to_string().unwrap_or_default();
        bail!("the collector answered HTTP {status}: {text}");
    }
    let total: Option<u64> = response
        .headers()
        .get(EVENTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());

    let progress = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} exporting [{bar:40}] {human_pos}/{human_len} events, {binary_bytes_per_sec} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let to_stdout = args.out.as_os_str() == "-";
    let partial = partial_path(&args.out);
    let started = Instant::now();
    let written = (|| -> anyhow::Result<(u64, u64)> {
        let file = if to_stdout {
            Out::Stdout(std::io::stdout())
        } else {
            Out::File(
                File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
            )
        };
        let mut sink = match args.format {
            Format::Ndjson => Sink::Ndjson(BufWriter::with_capacity(1 << 20, file)),
            Format::Parquet => {
                Sink::Parquet(Box::new(ParquetSink::new(file, args.row_group_rows)?))
            }
        };
        let mut reader = BufReader::with_capacity(1 << 20, response.into_body().into_reader());
        let mut line = Vec::with_capacity(4096);
        let (mut events, mut bytes) = (0u64, 0u64);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .context("the export stream broke off; nothing was kept")?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                bail!("the export stream ended inside a line; nothing was kept");
            }
            events += 1;
            bytes += n as u64;
            sink.write(&line)
                .with_context(|| format!("event {events} of the export"))?;
            progress.set_position(events);
            if total.is_some_and(|t| events > t) {
                // Events stored while the export runs: the count grows.
                progress.set_length(events);
            }
        }
        sink.finish()?;
        Ok((events, bytes))
    })();
    progress.finish_and_clear();
    let (events, bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(e);
        }
    };
    if to_stdout {
        eprintln!(
            "exported {events} events ({bytes} bytes of NDJSON) to stdout in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    std::fs::rename(&partial, &args.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.out.display()
        )
    })?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "exported {events} events ({bytes} bytes of NDJSON) to {} in {:.1} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "format": match args.format { Format::Ndjson => "ndjson", Format::Parquet => "parquet" },
            "out": args.out.display().to_string(),
            "bytes": size,
        })
    );
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Where the export goes: the partial file, or stdout.
enum Out {
    File(File),
    Stdout(std::io::Stdout),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::File(f) => f.write(buf),
            Out::Stdout(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File(f) => f.flush(),
            Out::Stdout(s) => s.flush(),
        }
    }
}

impl Out {
    /// Flushes, and makes a file durable before it is renamed.
    fn finish(mut self) -> std::io::Result<()> {
        self.flush()?;
        match self {
            Out::File(f) => f.sync_all(),
            Out::Stdout(_) => Ok(()),
        }
    }
}

enum Sink {
    Ndjson(BufWriter<Out>),
    Parquet(Box<ParquetSink>),
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Ndjson(w) => Ok(w.write_all(line)?),
            Sink::Parquet(p) => p.push(line),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Ndjson(w) => {
                w.into_inner().map_err(|e| e.into_error())?.finish()?;
                Ok(())
            }
            Sink::Parquet(p) => p.finish(),
        }
    }
}

/// An optional column of one row group: present values, and one
/// definition level per row (1 present, 0 null).
#[derive(Default)]
struct Optional<T> {
    values: Vec<T>,
    defs: Vec<i16>,
}

impl<T> Optional<T> {
    fn push(&mut self, v: Option<T>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.defs.push(1);
            }
            None => self.defs.push(0),
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.defs.clear();
    }
}

/// The columns of the row group being filled.
#[derive(Default)]
struct Columns {
    message_id: Vec<ByteArray>,
    kind: Vec<ByteArray>,
    event: Optional<ByteArray>,
    user_id: Optional<ByteArray>,
    anonymous_id: Optional<ByteArray>,
    install_id: Optional<ByteArray>,
    seq: Optional<i64>,
    session_id: Optional<ByteArray>,
    timestamp: Vec<i64>,
    received_at: Vec<i64>,
    properties: Optional<ByteArray>,
    context: Optional<ByteArray>,
}

/// The members of a line kept as JSON text.
#[derive(Deserialize)]
struct RawMembers<'a> {
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(rename = "receivedAt", default)]
    received_at: Option<String>,
}

/// Writes rows into a Parquet file, one row group per `rows_per_group`.
struct ParquetSink {
    writer: SerializedFileWriter<Out>,
    columns: Columns,
    rows: usize,
    rows_per_group: usize,
}

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

impl ParquetSink {
    fn new(file: Out, rows_per_group: usize) -> anyhow::Result<ParquetSink> {
        let schema = Arc::new(parse_message_type(PARQUET_SCHEMA)?);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_created_by(format!("tally {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetSink {
            writer: SerializedFileWriter::new(file, schema, Arc::new(props))?,
            columns: Columns::default(),
            rows: 0,
            rows_per_group,
        })
    }

    /// One NDJSON line into the current row group.
    fn push(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let text = std::str::from_utf8(line).context("the line is not UTF-8")?;
        let msg: Message = serde_json::from_str(text).context("the line is not a message")?;
        let raw: RawMembers<'_> =
            serde_json::from_str(text).context("the line is not a message")?;
        let timestamp = msg
            .timestamp
            .as_deref()
            .and_then(parse_timestamp)
            .context("the line has no corrected timestamp")?;
        let received_at = raw
            .received_at
            .as_deref()
            .and_then(parse_timestamp)
            .context("the line has no receivedAt")?;
        let tally = msg.tally();
        let c = &mut self.columns;
        c.message_id
            .push(bytes(msg.message_id.as_deref().unwrap_or_default()));
        c.kind.push(bytes(
            msg.kind.as_ref().map(|k| k.as_str()).unwrap_or_default(),
        ));
        c.event.push(msg.event_name().map(bytes));
        c.user_id.push(Message::non_empty(&msg.user_id).map(bytes));
        c.anonymous_id
            .push(Message::non_empty(&msg.anonymous_id).map(bytes));
        c.install_id
            .push(tally.and_then(|t| t.install_id.as_deref()).map(bytes));
        c.seq.push(
            tally
                .and_then(|t| t.seq)
                .and_then(|s| i64::try_from(s).ok()),
        );
        c.session_id.push(
            tally
                .and_then(|t| Message::non_empty(&t.session_id))
                .map(bytes),
        );
        c.timestamp.push(timestamp);
        c.received_at.push(received_at);
        c.properties
            .push(msg.properties.as_ref().map(|p| bytes(p.get())));
        c.context.push(raw.context.map(|v| bytes(v.get())));
        self.rows += 1;
        if self.rows >= self.rows_per_group {
            self.flush_group()?;
        }
        Ok(())
    }

    /// Writes the buffered rows as one row group.
    fn flush_group(&mut self) -> anyhow::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let c = &mut self.columns;
        let mut group = self.writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&c.message_id, None, None)?,
                1 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&c.kind, None, None)?,
                2 => write_optional(column.typed::<ByteArrayType>(), &c.event)?,
                3 => write_optional(column.typed::<ByteArrayType>(), &c.user_id)?,
                4 => write_optional(column.typed::<ByteArrayType>(), &c.anonymous_id)?,
                5 => write_optional(column.typed::<ByteArrayType>(), &c.install_id)?,
                6 => write_optional(column.typed::<Int64Type>(), &c.seq)?,
                7 => write_optional(column.typed::<ByteArrayType>(), &c.session_id)?,
                8 => column
                    .typed::<Int64Type>()
                    .write_batch(&c.timestamp, None, None)?,
                9 => column
                    .typed::<Int64Type>()
                    .write_batch(&c.received_at, None, None)?,
                10 => write_optional(column.typed::<ByteArrayType>(), &c.properties)?,
                11 => write_optional(column.typed::<ByteArrayType>(), &c.context)?,
                _ => bail!("the Parquet schema has more columns than tally export writes"),
            };
            column.close()?;
            index += 1;
        }
        group.close()?;
        c.message_id.clear();
        c.kind.clear();
        c.event.clear();
        c.user_id.clear();
        c.anonymous_id.clear();
        c.install_id.clear();
        c.seq.clear();
        c.session_id.clear();
        c.timestamp.clear();
        c.received_at.clear();
        c.properties.clear();
        c.context.clear();
        self.rows = 0;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.flush_group()?;
        self.writer.into_inner()?.finish()?;
        Ok(())
    }
}

fn write_optional<T: parquet::data_type::DataType>(
    writer: &mut parquet::column::writer::ColumnWriterImpl<'_, T>,
    column: &Optional<T::T>,
) -> parquet::errors::Result<usize> {
    writer.write_batch(&column.values, Some(&column.defs), None)
}
