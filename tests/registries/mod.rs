//! Extra docker-registry instances for tests that need a registry configured otherwise
//! than the shared one `scripts/test` starts (basic or token auth, TLS, a pull-through
//! cache): each is Debian's real `docker-registry` on 127.0.0.1:<free port> with the
//! config given, its data and log in a temp dir, and is killed when dropped. Shared by
//! the test binaries that need one through `#[path]`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    /// Start a registry in `dir` (where the caller has put the files its config names:
    /// a htpasswd, certificates) whose config is the usual one plus `extra`, YAML at the
    /// top level (e.g. an `auth:` or `proxy:` section), and `http_extra` under `http:`
    /// (e.g. `tls:`), indented by the caller for that level (two spaces).
    pub fn start(dir: tempfile::TempDir, extra: &str, http_extra: &str) -> Registry {
        Registry::start_on("127.0.0.1", dir, extra, http_extra)
    }

    /// `start`, listening on `ip` (an address of this machine) instead of 127.0.0.1.
    pub fn start_on(ip: &str, dir: tempfile::TempDir, extra: &str, http_extra: &str) -> Registry {
        let port = TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port();
        let addr = format!("{ip}:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
             rootdirectory: {data}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      \
             enabled: false\nhttp:\n  addr: {addr}\n{http_extra}\n{extra}\n",
            data = dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("registry.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/test installs it)");
        let mut r = Registry { addr, dir, child };
        let start = Instant::now();
        while TcpStream::connect(&r.addr).is_err() {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}):\n{}", r.log());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "docker-registry never listened:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry has logged so far (its access log included).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("registry.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The log once it has every one of `lines` (or after 10 s, for the assertion to
    /// show): the registry writes a request's access line after the response, so a
    /// client that already has its bytes can look before the line is there.
    #[allow(dead_code)] // not every test binary that includes this module asks
    pub fn log_with(&self, lines: &[String]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if lines.iter().all(|l| log.contains(l.as_str())) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
