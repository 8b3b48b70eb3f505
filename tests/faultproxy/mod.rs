//! A fault-injecting HTTP/1.1 proxy for tests: it sits on a loopback port between imgfs
//! and the real test registry and passes requests through, except that a test can make
//! it misbehave per request: cut a response body after N bytes, flip one body byte,
//! stall, hold a response back until the test lets it go, answer an error status (with
//! `Retry-After`) instead of the registry, or refuse connections altogether (and cut
//! the ones open). It parses just enough HTTP to know where each response body ends
//! (GET and HEAD requests, `Content-Length` bodies), so one rule hits one response even
//! on a kept-alive connection. It also logs the requests it saw (path, Range header).
//!
//! With no rule it is a plain pass-through whose address is its own: the registry logs
//! each request's Host header, which is then the proxy's address, so a test counts the
//! requests that came through its own proxy and no one else's.
//!
//! Shared by test binaries through `#[path = "faultproxy/mod.rs"] mod faultproxy;`
//! (tests/faults.rs and the mount tests).
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What to do to a response.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers and this many body bytes, then close the connection.
    DropAfter(u64),
    /// As DropAfter, and from then on refuse connections (the registry went away
    /// mid-transfer) until `set_down(false)`.
    DieAfter(u64),
    /// Flip the low bit of the body byte at this offset.
    FlipByte(u64),
    /// Read the request, then close the connection without an answer.
    Close,
    /// Read the request, then send nothing until the proxy is dropped.
    Stall,
    /// Pass the request on, then hold its response back until `release()` (or until the
    /// proxy is dropped): a download as slow as a test wants it.
    Hold,
    /// Answer this status (and `Retry-After: secs` if given) without asking the registry.
    Status(u16, Option<u64>),
}

/// A fault for requests whose path contains `path`: the first `times` of them (every
/// one if None).
#[derive(Clone, Debug)]
pub struct Rule {
    pub path: String,
    pub times: Option<usize>,
    pub fault: Fault,
}

impl Rule {
    pub fn new(path: &str, fault: Fault) -> Rule {
        Rule { path: path.to_string(), times: None, fault }
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub at: Instant,
    /// Whether a fault was applied to it, and which.
    pub fault: Option<Fault>,
}

struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// What `Fault::Hold` waits on: shut until `release()`.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Responses held so far.
    held: AtomicUsize,
}

impl Gate {
    fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait_open(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

/// What the threads of one proxy share.
struct Shared {
    state: Mutex<State>,
    down: AtomicBool,
    stop: AtomicBool,
    gate: Gate,
    /// Bumped by `set_offline(true)`: a connection accepted before the bump is cut at
    /// its next request or body chunk.
    cuts: AtomicUsize,
}

pub struct FaultProxy {
    pub addr: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { rules: Vec::new(), seen: Vec::new() }),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            gate: Gate::default(),
            cuts: AtomicUsize::new(0),
        });
        let thread = {
            let (shared, upstream, addr) = (shared.clone(), upstream.to_string(), addr.clone());
            std::thread::spawn(move || accept_loop(listener, &addr, &upstream, shared))
        };
        FaultProxy { addr, shared, thread: Some(thread) }
    }

    pub fn add(&self, rule: Rule) {
        self.shared.state.lock().unwrap().rules.push(rule);
    }

    pub fn clear(&self) {
        self.shared.state.lock().unwrap().rules.clear();
    }

    /// Refuse connections (the port is closed) until `set_down(false)`. Connections
    /// already open are not touched.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        // Wait until the accept loop has closed or reopened the port.
        for _ in 0..200 {
            let refused = TcpStream::connect(&self.addr).is_err();
            if refused == down {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the proxy port did not change state");
    }

    /// The registry gone as a client sees it, or back: `set_down`, and on the way down
    /// the connections already open are cut too, each at its next request or body
    /// chunk (a client keeps connections alive between requests, so closing the port
    /// alone would leave it a way through).
    pub fn set_offline(&self, offline: bool) {
        self.set_down(offline);
        if offline {
            // After the port is closed: every connection there is was accepted before.
            self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many responses `Fault::Hold` has held back so far.
    pub fn held(&self) -> usize {
        self.shared.gate.held.load(Ordering::SeqCst)
    }

    /// Let the held responses go, and hold none from now on.
    pub fn release(&self) {
        self.shared.gate.open();
    }

    pub fn is_released(&self) -> bool {
        self.shared.gate.is_open()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    /// Requests whose path contains `path`.
    pub fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.contains(path)).collect()
    }
}

impl Drop for FaultProxy {
    /// Never leave a connection (and the thread of a test waiting on it) held.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, addr: &str, upstream: &str, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        match (&listener, shared.down.load(Ordering::SeqCst)) {
            (Some(_), true) => listener = None,
            // std binds with SO_REUSEADDR, so the port can be taken up again at once.
            (None, false) => listener = Some(TcpListener::bind(addr).expect("rebind the proxy port")),
            _ => {}
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                // Read here, in the thread that closes the port: see set_offline.
                let cuts = shared.cuts.load(Ordering::SeqCst);
                let (shared, upstream) = (shared.clone(), upstream.to_string());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &shared, cuts);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The fault for a request to `path`, counting it against its rule.
fn pick(state: &Mutex<State>, path: &str, range: Option<String>) -> Option<Fault> {
    let mut st = state.lock().unwrap();
    let mut fault = None;
    for rule in st.rules.iter_mut() {
        if path.contains(&rule.path) && rule.times != Some(0) {
            rule.times = rule.times.map(|n| n - 1);
            fault = Some(rule.fault.clone());
            break;
        }
    }
    st.seen.push(Seen { path: path.to_string(), range, at: Instant::now(), fault: fault.clone() });
    fault
}

/// Read one message head (request or response) up to the blank line.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Serve one client connection; `cuts` is `Shared::cuts` when it was accepted.
fn serve(client: TcpStream, upstream: &str, shared: &Shared, cuts: usize) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let up = TcpStream::connect(upstream)?;
    let mut from_up = BufReader::new(up.try_clone()?);
    let mut to_up = up;
    // Returning closes both connections.
    let cut = || shared.cuts.load(Ordering::SeqCst) != cuts;
    loop {
        let Some(req) = read_head(&mut from_client)? else { return Ok(()) };
        if cut() {
            return Ok(());
        }
        let path = req.first().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_string();
        let fault = pick(&shared.state, &path, header(&req, "range").map(str::to_string));
        match fault {
            Some(Fault::Close) => {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Stall) => {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            Some(Fault::Status(code, retry_after)) => {
                let mut head = format!("HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\n");
                if let Some(s) = retry_after {
                    head.push_str(&format!("Retry-After: {s}\r\n"));
                }
                head.push_str("\r\n");
                to_client.write_all(head.as_bytes())?;
                continue;
            }
            _ => {}
        }
        let mut out = req.join("\r\n");
        out.push_str("\r\n\r\n");
        to_up.write_all(out.as_bytes())?;
        let held = matches!(fault, Some(Fault::Hold)) && !shared.gate.is_open();
        if held {
            shared.gate.held.fetch_add(1, Ordering::SeqCst);
        }

        let Some(resp) = read_head(&mut from_up)? else { return Ok(()) };
        if held {
            shared.gate.wait_open();
        }
        if cut() {
            return Ok(());
        }
        let mut head = resp.join("\r\n");
        head.push_str("\r\n\r\n");
        to_client.write_all(head.as_bytes())?;
        let status: u16 = resp.first().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = if status == 204 || status == 304 || req[0].starts_with("HEAD ") {
            0
        } else if let Some(n) = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            n
        } else {
            // Without a length the body runs to the end of the connection.
            std::io::copy(&mut from_up, &mut to_client)?;
            return Ok(());
        };
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        while sent < len {
            if cut() {
                return Ok(());
            }
            let mut want = (len - sent).min(buf.len() as u64) as usize;
            if let Some(Fault::DropAfter(n) | Fault::DieAfter(n)) = fault {
                if sent >= n {
                    if let Some(Fault::DieAfter(_)) = fault {
                        shared.down.store(true, Ordering::SeqCst);
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                    return Ok(());
                }
                want = want.min((n - sent) as usize);
            }
            let k = from_up.read(&mut buf[..want])?;
            if k == 0 {
                return Ok(());
            }
            if let Some(Fault::FlipByte(at)) = fault {
                if (sent..sent + k as u64).contains(&at) {
                    buf[(at - sent) as usize] ^= 1;
                }
            }
            to_client.write_all(&buf[..k])?;
            sent += k as u64;
        }
        if let Some(Fault::DropAfter(_)) = fault {
            // The whole body fitted under the cut: still close, as a broken link would.
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
