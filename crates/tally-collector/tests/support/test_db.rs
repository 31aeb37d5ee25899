//! A PostgreSQL database of its own for one test, dropped after it, also
//! when the test fails. Shared by the test files that need PostgreSQL
//! (`#[path]` module).
//!
//! The server the databases are made on, decided once per test process:
//!
//! 1. `TALLY_TEST_DATABASE_URL`, when set (an account that may create
//!    databases);
//! 2. else the local default, `postgres://postgres@127.0.0.1:5432/test`,
//!    when it answers and may create databases;
//! 3. else a throwaway cluster of this process's own ([`own_cluster`]):
//!    Debian's `initdb` and `pg_ctl` on a temporary directory and a free
//!    loopback port, run as the `postgres` user when the tests run as
//!    root (PostgreSQL refuses root), stopped and removed when the test
//!    process ends, however it ends. `TALLY_TEST_POSTGRES=own` picks it
//!    even when 1 or 2 would do, so CI proves this path.

#![allow(dead_code)] // each test file uses part of it

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The local server a developer machine usually has.
const LOCAL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the account the test databases are created with.
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if std::env::var("TALLY_TEST_POSTGRES").is_ok_and(|v| v == "own") {
            return own_cluster::start();
        }
        if let Some(url) = std::env::var("TALLY_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return url;
        }
        if may_create_databases(LOCAL_DEFAULT) {
            return LOCAL_DEFAULT.to_owned();
        }
        own_cluster::start()
    })
}

/// Whether `url` answers, within a couple of seconds, as an account that
/// may create databases.
fn may_create_databases(url: &str) -> bool {
    let Ok(mut config) = url.parse::<::postgres::Config>() else {
        return false;
    };
    config.connect_timeout(Duration::from_secs(2));
    let Ok(mut client) = config.connect(::postgres::NoTls) else {
        return false;
    };
    client
        .query_one(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .is_ok_and(|row| row.get::<_, bool>(0))
}

pub mod own_cluster {
    //! A PostgreSQL cluster for one test process.

    use std::net::TcpListener;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// Starts the cluster and returns its admin URL; panics with what
    /// failed (the tests that need it cannot run without it).
    pub fn start() -> String {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("tally-test-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).expect("a directory for the test cluster");
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("the test cluster's directory handed to its user");
        }
        run(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync", "--no-instructions"]),
            &dir,
            owner,
        );
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        watch(&dir, &data);
        run(
            Command::new(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            &dir,
            owner,
        );
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// The newest installed server's programs (Debian keeps them out of
    /// `PATH`), else whatever `PATH` has.
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, bin)) => bin,
            None => {
                let found = Command::new("sh")
                    .args(["-c", "command -v initdb"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| String::from_utf8(o.stdout).ok());
                let initdb = found.map(|s| PathBuf::from(s.trim())).expect(
                    "no PostgreSQL server programs (initdb): install the postgresql \
                     package or set TALLY_TEST_DATABASE_URL",
                );
                initdb.parent().map(Path::to_owned).unwrap_or_default()
            }
        }
    }

    /// Who runs the server: `None` for this process's user, else the
    /// `postgres` (or `nobody`) account when the tests run as root.
    fn server_user() -> Option<(u32, u32)> {
        if id(&["-u"]) != Some(0) {
            return None;
        }
        ["postgres", "nobody"]
            .iter()
            .find_map(|user| Some((id(&["-u", user])?, id(&["-g", user])?)))
            .or_else(|| panic!("the tests run as root and no postgres or nobody user exists"))
    }

    fn id(args: &[&str]) -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener.local_addr().expect("its address").port()
    }

    fn run(command: &mut Command, dir: &Path, owner: Option<(u32, u32)>) {
        command
            .current_dir(dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        let out = command.output().expect("a PostgreSQL program runs");
        assert!(
            out.status.success(),
            "{command:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A watcher in a process group of its own (so Ctrl-C on the tests
    /// does not take it too) that waits for this process to end, however
    /// it ends, then stops the cluster at once and removes its directory.
    #[allow(clippy::zombie_processes)] // it must outlive this process, not be waited for
    fn watch(dir: &Path, data: &Path) {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
             pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pid\" ]; then kill -QUIT \"$pid\"; \
               for _ in $(seq 1 100); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done; fi; \
             rm -rf '{dir}'",
            parent = std::process::id(),
            data = data.display(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the test cluster's watcher starts");
    }
}

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
        let admin_url = admin_url().to_owned();
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
