//! `Content-Encoding` of request bodies: identity, gzip, zstd, with
//! bounded decompression.
//!
//! Decoding never holds more than [`DecodeLimits::max_decoded_bytes`] (+ one
//! 64 KiB read) of output, and stops as soon as the output passes that size
//! or the output/input ratio passes [`DecodeLimits::max_ratio`], so a 1 GiB
//! bomb costs a few milliseconds and a few MiB, not a gigabyte.

use std::io::{self, Read, Write};

use crate::limits::DecodeLimits;

/// zstd frames may ask the decoder for a window of up to 2 GiB; this caps
/// what a hostile frame can make us allocate (2^23 = 8 MiB). zstd picks a
/// window no larger than its input, and batches are far under 8 MiB, so
/// real senders never hit it.
const ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// zstd level for bodies Tally encodes: level 3 is zstd's default, a good
/// speed/size point for small JSON batches.
const ZSTD_LEVEL: i32 = 3;

const READ_CHUNK: usize = 64 * 1024;

/// A body encoding Tally reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentEncoding {
    /// No compression.
    #[default]
    Identity,
    /// gzip (RFC 1952), as Segment's and RudderStack's libraries send.
    Gzip,
    /// zstd (RFC 8878), what the Tally SDK sends.
    Zstd,
}

impl ContentEncoding {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// Reads a `Content-Encoding` header (absent means identity).
    pub fn from_header(value: Option<&str>) -> Result<Self, EncodingError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            _ => Err(EncodingError::Unsupported),
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// The `Content-Encoding` is not identity, gzip or zstd (or lists more
    /// than one).
    #[error("unsupported content encoding")]
    Unsupported,
    /// The body as sent is larger than the limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The decoded body would be larger than the limit (a bomb, or JSON
    /// padded with whitespace).
    #[error("decoded body larger than {limit} bytes")]
    DecodedTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The body decompresses at a ratio no real batch has.
    #[error("decompression ratio above {limit}")]
    RatioTooHigh {
        /// The limit in force.
        limit: usize,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("corrupt {encoding} stream: {source}")]
    Corrupt {
        /// Which codec failed.
        encoding: &'static str,
        /// The codec's error.
        #[source]
        source: io::Error,
    },
}

impl EncodingError {
    /// Whether the error means "too large" (HTTP 413) rather than "bad
    /// request" (HTTP 400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { .. } | Self::DecodedTooLarge { .. } | Self::RatioTooHigh { .. }
        )
    }
}

/// Compresses `json` with `encoding`.
pub fn encode(json: &[u8], encoding: ContentEncoding) -> Vec<u8> {
    match encoding {
        ContentEncoding::Identity => json.to_vec(),
        ContentEncoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 4),
                flate2::Compression::default(),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(json);
            enc.finish().unwrap_or_default()
        }
        ContentEncoding::Zstd => zstd::bulk::compress(json, ZSTD_LEVEL).unwrap_or_default(),
    }
}

/// Decompresses `body` under `limits`.
pub fn decode(
    body: &[u8],
    encoding: ContentEncoding,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, EncodingError> {
    if body.len() > limits.max_body_bytes {
        return Err(EncodingError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    match encoding {
        ContentEncoding::Identity => {
            if body.len() > limits.max_decoded_bytes {
                return Err(EncodingError::DecodedTooLarge {
                    limit: limits.max_decoded_bytes,
                });
            }
            Ok(body.to_vec())
        }
        ContentEncoding::Gzip => bounded_read(
            flate2::read::MultiGzDecoder::new(body),
            body.len(),
            "gzip",
            limits,
        ),
        ContentEncoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|source| {
                EncodingError::Corrupt {
                    encoding: "zstd",
                    source,
                }
            })?;
            decoder
                .window_log_max(ZSTD_MAX_WINDOW_LOG)
                .map_err(|source| EncodingError::Corrupt {
                    encoding: "zstd",
                    source,
                })?;
            bounded_read(decoder, body.len(), "zstd", limits)
        }
    }
}

fn bounded_read<R: Read>(
    mut reader: R,
    input_len: usize,
    name: &'static str,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, EncodingError> {
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).min(limits.max_decoded_bytes));
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(EncodingError::Corrupt {
                    encoding: name,
                    source,
                })
            }
        };
        if out.len() + n > limits.max_decoded_bytes {
            return Err(EncodingError::DecodedTooLarge {
                limit: limits.max_decoded_bytes,
            });
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > limits.ratio_floor_bytes && out.len() / input_len.max(1) > limits.max_ratio {
            return Err(EncodingError::RatioTooHigh {
                limit: limits.max_ratio,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        use ContentEncoding as E;
        assert_eq!(E::from_header(None).unwrap(), E::Identity);
        assert_eq!(E::from_header(Some("")).unwrap(), E::Identity);
        assert_eq!(E::from_header(Some(" GZIP ")).unwrap(), E::Gzip);
        assert_eq!(E::from_header(Some("x-gzip")).unwrap(), E::Gzip);
        assert_eq!(E::from_header(Some("zstd")).unwrap(), E::Zstd);
        assert!(matches!(
            E::from_header(Some("br")),
            Err(EncodingError::Unsupported)
        ));
        assert!(matches!(
            E::from_header(Some("gzip, zstd")),
            Err(EncodingError::Unsupported)
        ));
    }

    #[test]
    fn every_encoding_round_trips() {
        let json = br#"{"batch":[{"type":"track","event":"x"}]}"#.repeat(50);
        for enc in [
            ContentEncoding::Identity,
            ContentEncoding::Gzip,
            ContentEncoding::Zstd,
        ] {
            let body = encode(&json, enc);
            assert_eq!(
                decode(&body, enc, &DecodeLimits::default()).unwrap(),
                json,
                "{enc:?}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_corrupt_not_short() {
        let json = br#"{"batch":[]}"#.repeat(100);
        for enc in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            let body = encode(&json, enc);
            let err = decode(&body[..body.len() / 2], enc, &DecodeLimits::default()).unwrap_err();
            assert!(
                matches!(err, EncodingError::Corrupt { .. }),
                "{enc:?}: {err}"
            );
            assert!(!err.is_too_large());
        }
    }

    #[test]
    fn limits_apply_to_identity_and_to_the_body_as_sent() {
        let limits = DecodeLimits {
            max_body_bytes: 100,
            max_decoded_bytes: 50,
            ..DecodeLimits::default()
        };
        let err = decode(&[b' '; 101], ContentEncoding::Identity, &limits).unwrap_err();
        assert!(matches!(err, EncodingError::BodyTooLarge { limit: 100 }));
        let err = decode(&[b' '; 51], ContentEncoding::Identity, &limits).unwrap_err();
        assert!(matches!(err, EncodingError::DecodedTooLarge { limit: 50 }));
        assert!(err.is_too_large());
        assert_eq!(
            decode(&[b' '; 50], ContentEncoding::Identity, &limits)
                .unwrap()
                .len(),
            50
        );
    }

    #[test]
    fn ratio_limit_stops_a_small_bomb_before_the_size_cap() {
        let bomb = encode(&vec![b' '; 4 * 1024 * 1024], ContentEncoding::Gzip);
        let limits = DecodeLimits {
            ratio_floor_bytes: 64 * 1024,
            max_ratio: 100,
            ..DecodeLimits::default()
        };
        let err = decode(&bomb, ContentEncoding::Gzip, &limits).unwrap_err();
        assert!(
            matches!(err, EncodingError::RatioTooHigh { limit: 100 }),
            "{err}"
        );
    }
}
