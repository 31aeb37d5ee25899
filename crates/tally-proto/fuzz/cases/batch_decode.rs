//! One fuzz case of the collector's whole decode path on arbitrary bytes:
//! encoding header, bounded decompression, digest check, envelope and
//! message decoding, validation, clock correction. Nothing may panic, and
//! decoding must stay inside the limits. Shared by the libFuzzer target and
//! the smoke test CI runs (`tests/fuzz_smoke.rs`).

use tally_proto::{
    correct, decode_json, decompress, validate, verify_digest, ContentEncoding, DecodeLimits,
};

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => ContentEncoding::Identity,
        1 => ContentEncoding::Gzip,
        _ => ContentEncoding::Zstd,
    };
    // Small limits so the fuzzer explores the limit paths too.
    let limits = DecodeLimits {
        max_body_bytes: 1 << 20,
        max_decoded_bytes: 1 << 20,
        max_ratio: 50,
        ratio_floor_bytes: 4096,
        max_batch_messages: 64,
    };
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = verify_digest(text, body);
    }
    let Ok(json) = decompress(body, encoding, &limits) else {
        return;
    };
    assert!(json.len() <= limits.max_decoded_bytes);
    let Ok(decoded) = decode_json(&json, &limits) else {
        return;
    };
    assert!(decoded.messages.len() <= limits.max_batch_messages);
    let batch_sent_at = decoded.sent_at_ms();
    for m in &decoded.messages {
        let Ok(msg) = &m.parsed else { continue };
        if let Ok(checked) = validate(msg, m.raw) {
            let ts = checked.timestamp.unwrap_or(0);
            let c = correct(
                ts,
                checked.sent_at.or(batch_sent_at),
                1_700_000_000_000,
                300_000,
            );
            assert!(c.ts_corrected <= 1_700_000_000_000 + 300_000);
        }
        // Re-encoding a decoded message and decoding it again is stable.
        let again = msg.to_json();
        let reparsed: tally_proto::Message =
            serde_json::from_str(&again).expect("re-encoded message decodes");
        assert_eq!(&reparsed, msg);
    }
}
