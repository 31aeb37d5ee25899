//! Bounding the request body as sent.
//!
//! The body is read frame by frame through [`http_body_util::Limited`]: a
//! `Content-Length` over the limit is refused before a byte is read, and a
//! chunked body is refused as soon as it passes the limit, so an oversized
//! upload never sits whole in memory.

use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ApiError;

/// Longest time to receive a whole body. A 500 KB batch takes 8 s at
/// 0.5 Mbit/s (a poor mobile link); 60 s covers that with a wide margin
/// while keeping a stalled client from holding an ingest slot for good.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads `body` whole, refusing it (413) once it passes `limit` bytes, or
/// (408) when it has not arrived within `timeout`.
pub async fn read_bounded(
    body: Body,
    content_length: Option<u64>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"));
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(ApiError::RequestTimeout);
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        // The client went away or sent a broken chunked encoding.
        Err(_) => Err(ApiError::Undecodable(
            "the request body could not be read".into(),
        )),
    }
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
