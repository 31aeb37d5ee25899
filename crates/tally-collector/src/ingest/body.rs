//! Bounding the request body as sent, in size and in time.
//!
//! The body is read frame by frame: a `Content-Length` over the limit is
//! refused before a byte is read, and a chunked body is refused as soon as
//! it passes the limit, so an oversized upload never sits whole in memory.
//!
//! # The read deadline
//!
//! A body must keep arriving at [`MIN_BODY_RATE`] bytes per second after a
//! grace of [`BODY_READ_BASE`]: having received `n` bytes, a request may
//! have taken at most `BODY_READ_BASE + n / MIN_BODY_RATE` so far, and
//! never more than the caller's cap. A sender that stalls or trickles is
//! answered 408 after about [`BODY_READ_BASE`], whatever the size it
//! announced, so a slot (and its connection) is held only while bytes
//! really flow; a 500 KB batch on a 128 kbit/s link still gets its ~36 s.

use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::error::ApiError;

/// Longest time to receive a whole body, however fast it flows. A 500 KB
/// batch takes 8 s at 0.5 Mbit/s (a poor mobile link); 60 s covers that
/// with a wide margin, and a 20 MiB body needs 2.8 Mbit/s to fit.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Grace before a body must flow at [`MIN_BODY_RATE`]: a mobile radio
/// waking from idle (about 2 s on 3G), a TCP retransmission (1 s initial
/// RTO) and a TLS record, with room to spare.
pub const BODY_READ_BASE: Duration = Duration::from_secs(5);

/// Slowest average transfer a body may have after [`BODY_READ_BASE`]:
/// 16 KiB/s is 131 kbit/s, about an EDGE link. A sender slower than this
/// on average is cut off, not waited for.
pub const MIN_BODY_RATE: u64 = 16 * 1024;

/// Reads `body` whole, refusing it (413) once it passes `limit` bytes, or
/// (408) when it falls behind the rate of the module doc or runs past
/// `cap`.
pub async fn read_bounded(
    body: Body,
    content_length: Option<u64>,
    limit: usize,
    cap: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"));
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let started = Instant::now();
    let hard_deadline = started + cap;
    let mut body = body;
    let mut received: Vec<u8> = Vec::new();
    loop {
        let deadline = hard_deadline.min(started + allowed_time(received.len() as u64));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::RequestTimeout),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            // The client went away or sent a broken chunked encoding.
            Ok(Some(Err(_))) => {
                return Err(ApiError::Undecodable(
                    "the request body could not be read".into(),
                ))
            }
        };
        if let Ok(data) = frame.into_data() {
            if received.len() + data.len() > limit {
                return Err(too_large());
            }
            received.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(received))
}

/// How long a body that has delivered `bytes` so far may have taken.
fn allowed_time(bytes: u64) -> Duration {
    BODY_READ_BASE + Duration::from_secs_f64(bytes as f64 / MIN_BODY_RATE as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn under_at_and_over_the_limit() {
        let ok = read_bounded(Body::from(vec![b'x'; 10]), Some(10), 10, BODY_READ_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let err = read_bounded(Body::from(vec![b'x'; 11]), None, 10, BODY_READ_TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)));
        // A declared length over the limit is refused without reading.
        let err = read_bounded(Body::empty(), Some(11), 10, BODY_READ_TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)));
    }

    #[tokio::test]
    async fn a_stream_is_cut_as_soon_as_it_passes_the_limit() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let producer = tokio::spawn(async move {
            let mut sent = 0usize;
            for _ in 0..1000 {
                if tx.send(Ok(Bytes::from(vec![0u8; 1024]))).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let err = read_bounded(
            Body::from_stream(stream),
            None,
            10 * 1024,
            BODY_READ_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)));
        let sent = producer.await.unwrap();
        assert!(sent < 20, "the reader kept reading: {sent} chunks sent");
    }

    /// A body fed by a task: `chunks` of `size` bytes, one every `every`.
    fn paced(chunks: usize, size: usize, every: Duration) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                if tx.send(Ok(Bytes::from(vec![b'x'; size]))).await.is_err() {
                    break;
                }
            }
        });
        Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_the_base_whatever_it_announced() {
        let started = Instant::now();
        // One byte a second, announcing 1 MiB: the deadline moves by
        // 61 µs per byte, so it runs out just after the base.
        let err = read_bounded(
            paced(1000, 1, Duration::from_secs(1)),
            Some(1 << 20),
            2 << 20,
            BODY_READ_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::RequestTimeout));
        let took = started.elapsed();
        assert!(
            took >= BODY_READ_BASE && took < BODY_READ_BASE + Duration::from_millis(10),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_flowing_faster_than_the_rate_gets_past_the_base() {
        // 20 KiB/s for 10 s: twice the base, above the minimum rate.
        let chunk = 8 * 1024;
        let ok = read_bounded(
            paced(25, chunk, Duration::from_millis(400)),
            None,
            1 << 20,
            BODY_READ_TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 25 * chunk);
        // 12 KiB/s: behind the rate once the base is spent.
        let started = Instant::now();
        let err = read_bounded(
            paced(25, 12 * 1024, Duration::from_secs(1)),
            None,
            1 << 20,
            BODY_READ_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::RequestTimeout));
        // After chunk k (at k s) the deadline is 5 + 0.75 k s; chunk 17
        // is due at 17 s, when the deadline of chunk 16 (17 s) runs out.
        let took = started.elapsed().as_secs_f64();
        assert!((16.9..=17.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_a_fast_body_too() {
        let err = read_bounded(
            paced(100, 64 * 1024, Duration::from_secs(1)),
            None,
            100 << 20,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::RequestTimeout));
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"{\"batch\":[")))
            .await
            .unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let err = read_bounded(
            Body::from_stream(stream),
            None,
            1024,
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::RequestTimeout));
        drop(tx);
    }
}
