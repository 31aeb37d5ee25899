//! A PostgreSQL database of its own for one test, from
//! `TALLY_TEST_DATABASE_URL` (default the local server's `test`
//! database), dropped after it, also when the test fails. Shared by the
//! test files that need PostgreSQL (`#[path]` module).

#![allow(dead_code)] // each test file uses part of it

use std::sync::atomic::{AtomicUsize, Ordering};

/// A database made for one test, dropped (with its connections) when
/// the guard goes out of scope, also when the test panics.
pub struct TestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A database named after the test process (`tally_test_<pid>_<n>`).
    pub fn new() -> TestDb {
        Self::named("test")
    }

    /// `tally_<label>_<pid>_<n>`: the label says which test file made it.
    pub fn named(label: &str) -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let admin_url = std::env::var("TALLY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!(
            "tally_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = ::postgres::Client::connect(&admin_url, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url.as_str(), String::new()),
        };
        let prefix = &base[..base.rfind('/').unwrap()];
        let url = format!("{prefix}/{name}{query}");
        TestDb {
            admin_url,
            name,
            url,
        }
    }

    /// A plain connection to the test database.
    pub fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url, ::postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.admin_url, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
