//! A collector stand-in on 127.0.0.1 for the SDK's own tests: a real
//! HTTP server that counts every request and answers like the collector.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_proto::{decompress, ContentEncoding, DecodeLimits};

/// A collector stand-in: answers every message `accepted` (after
/// `delay_ms`), or the next request 503 with `Retry-After` when asked.
#[derive(Debug, Default)]
pub struct Collector {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub delay_ms: AtomicU64,
    /// Retry-After (seconds) of a 503 for the next request.
    pub refuse_next: Mutex<Option<u64>>,
    /// (event, critical) of every message answered, in order.
    pub messages: Mutex<Vec<(String, bool)>>,
    /// Every message answered, as sent, in order.
    pub sent: Mutex<Vec<serde_json::Value>>,
}

impl Collector {
    pub fn start() -> (Arc<Collector>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collector = Arc::new(Collector::default());
        let c = Arc::clone(&collector);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let c = Arc::clone(&c);
                std::thread::spawn(move || c.serve(stream));
            }
        });
        (collector, url)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        let answer = match self.refuse_next.lock().unwrap().take() {
            Some(secs) => format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            None => {
                let json = self.answer(&body);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                )
            }
        };
        // Done before the answer leaves, so a client that read it never
        // sees its request still in flight.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut stream = stream;
        let _ = stream.write_all(answer.as_bytes());
    }

    fn answer(&self, body: &[u8]) -> String {
        let json = decompress(body, ContentEncoding::Zstd, &DecodeLimits::default()).unwrap();
        let batch: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let mut results = Vec::new();
        let mut messages = self.messages.lock().unwrap();
        for m in batch["batch"].as_array().unwrap() {
            let critical = m["context"]["tally"]["priority"] == "critical";
            messages.push((m["event"].as_str().unwrap_or("").to_owned(), critical));
            results.push(serde_json::json!({"id": m["messageId"], "status": "accepted"}));
            self.sent.lock().unwrap().push(m.clone());
        }
        serde_json::json!({
            "server_time": tally_proto::format_timestamp(0),
            "accepted": results.len(),
            "duplicate": 0,
            "rejected": 0,
            "results": results,
        })
        .to_string()
    }

    pub fn answered(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}
