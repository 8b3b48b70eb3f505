//! A fault-injecting HTTP/1.1 proxy for tests: it sits on a loopback port between imgfs
//! and the real test registry and passes requests through, except that a test can make
//! it misbehave per request: cut a response body after N bytes, flip one body byte,
//! stall, answer an error status (with `Retry-After`) instead of the registry, or refuse
//! connections altogether. It parses just enough HTTP to know where each response body
//! ends (GET requests, `Content-Length` bodies), so one rule hits one response even on a
//! kept-alive connection. It also logs the requests it saw (path, Range header).
//!
//! Shared by test binaries through `#[path = "faultproxy/mod.rs"] mod faultproxy;`.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

pub struct FaultProxy {
    pub addr: String,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State { rules: Vec::new(), seen: Vec::new() }));
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, down, stop, upstream, addr) =
                (state.clone(), down.clone(), stop.clone(), upstream.to_string(), addr.clone());
            std::thread::spawn(move || accept_loop(listener, &addr, &upstream, state, down, stop))
        };
        FaultProxy { addr, state, down, stop, thread: Some(thread) }
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Refuse connections (the port is closed) until `set_down(false)`. Connections
    /// already open are not touched.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
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

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests whose path contains `path`.
    pub fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.contains(path)).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    addr: &str,
    upstream: &str,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut listener = Some(listener);
    while !stop.load(Ordering::SeqCst) {
        match (&listener, down.load(Ordering::SeqCst)) {
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
                let (state, stop, down, upstream) = (state.clone(), stop.clone(), down.clone(), upstream.to_string());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &state, &stop, &down);
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

fn serve(
    client: TcpStream,
    upstream: &str,
    state: &Mutex<State>,
    stop: &AtomicBool,
    down: &AtomicBool,
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let up = TcpStream::connect(upstream)?;
    let mut from_up = BufReader::new(up.try_clone()?);
    let mut to_up = up;
    loop {
        let Some(req) = read_head(&mut from_client)? else { return Ok(()) };
        let path = req.first().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_string();
        let fault = pick(state, &path, header(&req, "range").map(str::to_string));
        match fault {
            Some(Fault::Close) => {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Stall) => {
                while !stop.load(Ordering::SeqCst) {
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

        let Some(resp) = read_head(&mut from_up)? else { return Ok(()) };
        let mut head = resp.join("\r\n");
        head.push_str("\r\n\r\n");
        to_client.write_all(head.as_bytes())?;
        let status: u16 = resp.first().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = if status == 204 || status == 304 || req[0].starts_with("HEAD ") {
            0
        } else {
            match header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => n,
                None => {
                    // Without a length the body runs to the end of the connection.
                    std::io::copy(&mut from_up, &mut to_client)?;
                    return Ok(());
                }
            }
        };
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        while sent < len {
            let mut want = (len - sent).min(buf.len() as u64) as usize;
            if let Some(Fault::DropAfter(n) | Fault::DieAfter(n)) = fault {
                if sent >= n {
                    if let Some(Fault::DieAfter(_)) = fault {
                        down.store(true, Ordering::SeqCst);
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
