//! The registry client against a real registry (Debian's `docker-registry`, i.e.
//! distribution 2.8, started per test on a free 127.0.0.1 port) and, for what that
//! registry cannot show (Docker Hub's token service, a CDN redirect, a connection cut
//! mid-blob, a server that ignores Range), against tiny local HTTP servers that answer
//! the way Docker Hub and the distribution spec document.

use imgfs::digest::Digest;
use imgfs::image::OCI_MANIFEST;
use imgfs::registry::{Client, ClientOptions, RegistryError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "pushing/mod.rs"]
mod pushing;

/// A client that sees no credentials from the machine it runs on.
fn client() -> Client {
    Client::new(ClientOptions {
        insecure_registries: vec![],
        docker_config_dir: Some(PathBuf::from("/nonexistent/imgfs-test-docker-config")),
        ..Default::default()
    })
    .unwrap()
}

/// Deterministic bytes that do not compress or repeat in any helpful way.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn download(c: &Client, registry: &str, repo: &str, d: &Digest, size: Option<u64>) -> Result<Vec<u8>, RegistryError> {
    let mut f = tempfile::tempfile().unwrap();
    let n = c.download_blob(registry, repo, d, size, &mut f)?;
    let mut data = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut data).unwrap();
    assert_eq!(n, data.len() as u64);
    Ok(data)
}

// ---------------------------------------------------------------------------------
// A real registry

/// `docker-registry serve` on a free port with its storage in a temp dir; killed on drop.
struct LocalRegistry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        // The free port is found by binding and letting go; another test may grab it
        // in between, so a registry that cannot bind gets a second and third chance.
        let mut last = String::new();
        for _ in 0..3 {
            match LocalRegistry::try_start() {
                Ok(reg) => return reg,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn try_start() -> Result<LocalRegistry, String> {
        let bin = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: `apt-get install docker-registry` (scripts/registry does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut reg = LocalRegistry { child, addr, dir, http };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reg.http.get(reg.url("/v2/")).send() {
                if r.status() == 200 {
                    return Ok(reg);
                }
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry exited ({status}):\n{log}"));
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer on {} within 20 s", reg.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        pushing::push_blob(&self.http, &self.addr, repo, data)
    }

    fn push_manifest(&self, repo: &str, reference: &str, body: &[u8]) {
        pushing::push_manifest(&self.http, &self.addr, repo, reference, OCI_MANIFEST, body)
    }

    /// A one-layer OCI image under each of `tags`; returns the manifest and its digest.
    fn push_image(&self, repo: &str, tags: &[&str], layer: &[u8]) -> (Vec<u8>, Digest) {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.push_blob(repo, config);
        let layer_digest = self.push_blob(repo, layer);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        for tag in tags {
            self.push_manifest(repo, tag, &body);
        }
        let digest = Digest::of(&body);
        (body, digest)
    }

    /// Where distribution's filesystem driver keeps a blob's bytes.
    fn blob_file(&self, d: &Digest) -> PathBuf {
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()))
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ping_answers_for_a_local_registry() {
    let reg = LocalRegistry::start();
    client().ping(&reg.addr).unwrap();
}

#[test]
fn manifests_by_tag_and_by_digest() {
    let reg = LocalRegistry::start();
    let (body, digest) = reg.push_image("team/app", &["v1"], b"layer bytes");
    let c = client();
    let by_tag = c.get_manifest(&reg.addr, "team/app", "v1").unwrap();
    assert_eq!(by_tag.body, body);
    assert_eq!(by_tag.digest, digest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    let by_digest = c.get_manifest(&reg.addr, "team/app", digest.as_str()).unwrap();
    assert_eq!(by_digest.body, body);
    assert_eq!(by_digest.digest, digest);
}

#[test]
fn unknown_tag_repository_and_digest_are_not_found_with_their_names() {
    let reg = LocalRegistry::start();
    reg.push_image("team/app", &["v1"], b"layer");
    let c = client();
    let r = &reg.addr;

    let e = c.get_manifest(r, "team/app", "nope").unwrap_err();
    assert!(matches!(e, RegistryError::ManifestUnknown { .. }), "{e:?}");
    assert!(e.is_not_found() && !e.is_transient());
    assert_eq!(e.to_string(), format!("tag \"nope\" not found in {r}/team/app"));

    // A digest whose content the registry does not have.
    let missing = Digest::of(b"never pushed");
    let e = c.get_manifest(r, "team/app", missing.as_str()).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.to_string(), format!("manifest {missing} not found in {r}/team/app"));

    let e = c.get_manifest(r, "team/ghost", "v1").unwrap_err();
    assert!(matches!(e, RegistryError::RepositoryUnknown { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("repository team/ghost not found on registry {r}"));
    let e = c.list_tags(r, "team/ghost").unwrap_err();
    assert!(matches!(e, RegistryError::RepositoryUnknown { .. }), "{e:?}");

    let e = download(&c, r, "team/app", &missing, None).unwrap_err();
    assert!(matches!(e, RegistryError::BlobUnknown { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("blob {missing} not found in {r}/team/app"));
}

#[test]
fn a_closed_port_is_unreachable_and_transient() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let e = client().ping(&addr).unwrap_err();
    assert!(matches!(e, RegistryError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("cannot reach registry {addr}: ")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    let e = client().get_manifest(&addr, "a", "latest").unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[test]
fn blob_download_is_verified() {
    let reg = LocalRegistry::start();
    let layer = noise(700_000, 1);
    reg.push_image("app", &["v1"], &layer);
    let c = client();
    let d = Digest::of(&layer);
    assert_eq!(download(&c, &reg.addr, "app", &d, Some(layer.len() as u64)).unwrap(), layer);
    assert_eq!(download(&c, &reg.addr, "app", &d, None).unwrap(), layer);

    let e = download(&c, &reg.addr, "app", &d, Some(layer.len() as u64 - 1)).unwrap_err();
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e:?}");
    let e = download(&c, &reg.addr, "app", &d, Some(layer.len() as u64 + 1)).unwrap_err();
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("size mismatch for blob {}/app@{d}", reg.addr)), "{e}");
}

#[test]
fn a_corrupt_blob_is_a_digest_mismatch() {
    let reg = LocalRegistry::start();
    let layer = noise(50_000, 2);
    reg.push_image("app", &["v1"], &layer);
    let d = Digest::of(&layer);
    // The registry serves its files as they are: flip a byte on its disk.
    let path = reg.blob_file(&d);
    let mut bad = std::fs::read(&path).unwrap();
    bad[1234] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let e = download(&client(), &reg.addr, "app", &d, Some(layer.len() as u64)).unwrap_err();
    match &e {
        RegistryError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(expected, &d);
            assert_eq!(actual, &Digest::of(&bad));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!e.is_not_found() && !e.is_transient());
    assert!(e.to_string().contains(&format!("expected {d}, got {}", Digest::of(&bad))), "{e}");
}

#[test]
fn range_reads_from_a_real_registry() {
    let reg = LocalRegistry::start();
    let layer = noise(100_000, 3);
    reg.push_image("app", &["v1"], &layer);
    let (c, r, d) = (client(), &reg.addr, Digest::of(&layer));
    assert_eq!(c.read_blob_range(r, "app", &d, 0, 10).unwrap(), &layer[..10]);
    assert_eq!(c.read_blob_range(r, "app", &d, 40_000, 30_000).unwrap(), &layer[40_000..70_000]);
    // Short at the end of the blob, empty past it.
    assert_eq!(c.read_blob_range(r, "app", &d, 99_990, 100).unwrap(), &layer[99_990..]);
    assert_eq!(c.read_blob_range(r, "app", &d, 100_000, 100).unwrap(), b"");
    assert_eq!(c.read_blob_range(r, "app", &d, 5, 0).unwrap(), b"");
}

#[test]
fn tags_and_catalog_of_a_real_registry_across_pages() {
    let reg = LocalRegistry::start();
    reg.push_image("app", &["v1", "v2", "v3", "v4", "v5"], b"layer");
    reg.push_image("lib/one", &["latest"], b"one");
    reg.push_image("lib/two", &["latest"], b"two");
    let c = client().with_page_size(2);
    let mut tags = c.list_tags(&reg.addr, "app").unwrap();
    tags.sort();
    assert_eq!(tags, ["v1", "v2", "v3", "v4", "v5"]);
    // distribution paginates the catalog with `n` and Link: three repositories, two pages.
    assert_eq!(c.catalog(&reg.addr).unwrap(), ["app", "lib/one", "lib/two"]);
    assert_eq!(client().catalog(&reg.addr).unwrap(), ["app", "lib/one", "lib/two"]);
}

// ---------------------------------------------------------------------------------
// Small local servers for what the real registry cannot show

#[derive(Clone, Debug)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(&format!("http://x{}", self.path)).unwrap();
        url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Announce the whole body, send this many bytes of it, then close the connection.
    cut_after: Option<usize>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply { status, headers: vec![], body: vec![], cut_after: None }
    }
    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Reply {
        self.body = b.into();
        self
    }
    fn json(self, v: serde_json::Value) -> Reply {
        self.header("Content-Type", "application/json").body(serde_json::to_vec(&v).unwrap())
    }
    fn cut_after(mut self, n: usize) -> Reply {
        self.cut_after = Some(n);
        self
    }
}

type Handler = Box<dyn Fn(&Req) -> Reply + Send + Sync>;

/// An HTTP/1.1 server, one request per connection, that records every request.
struct FakeServer {
    addr: String,
    log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// `make` gets the server's own address (for realms and links) and returns the handler.
    fn start(ip: &str, make: impl FnOnce(&str) -> Handler) -> FakeServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler = make(&addr);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some(req) = read_request(&mut conn) else { continue };
                log2.lock().unwrap().push(req.clone());
                let reply = handler(&req);
                let _ = write_reply(&mut conn, &reply);
            }
        });
        FakeServer { addr, log, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path_only() == path).count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Some(Req { path, headers })
}

fn write_reply(conn: &mut TcpStream, r: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", r.status, r.body.len());
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    let sent = r.cut_after.unwrap_or(r.body.len()).min(r.body.len());
    conn.write_all(&r.body[..sent])?;
    conn.flush()?;
    conn.shutdown(std::net::Shutdown::Both)
}

/// `bytes=N-` or `bytes=N-M` → (N, M).
fn parse_range(h: &str) -> (usize, Option<usize>) {
    let spec = h.strip_prefix("bytes=").unwrap();
    let (a, b) = spec.split_once('-').unwrap();
    (a.parse().unwrap(), if b.is_empty() { None } else { Some(b.parse().unwrap()) })
}

/// Serve `data` honouring Range as the spec says (206 with Content-Range).
fn serve_range(req: &Req, data: &[u8]) -> Reply {
    match req.header("range") {
        None => Reply::new(200).body(data.to_vec()),
        Some(h) => {
            let (start, end) = parse_range(h);
            if start >= data.len() {
                return Reply::new(416).header("Content-Range", &format!("bytes */{}", data.len()));
            }
            let end = end.unwrap_or(data.len() - 1).min(data.len() - 1);
            Reply::new(206)
                .header("Content-Range", &format!("bytes {start}-{end}/{}", data.len()))
                .body(data[start..=end].to_vec())
        }
    }
}

/// A registry that wants bearer tokens from its own `/token` endpoint, as Docker Hub
/// documents it (https://distribution.github.io/distribution/spec/auth/token/):
/// a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, a token service
/// answering `{"token", "access_token", "expires_in", "issued_at"}`.
struct FakeHub {
    server: FakeServer,
    state: Arc<HubState>,
}

struct HubState {
    issued: AtomicUsize,
    /// Tokens numbered below this are refused (as if revoked or expired server-side).
    accept_from: AtomicUsize,
    expires_in: u64,
}

const HUB_SERVICE: &str = "fake.registry, with a comma";

impl FakeHub {
    fn start(expires_in: u64, manifest: Vec<u8>, blob: Option<(Vec<u8>, Option<String>)>) -> FakeHub {
        let state = Arc::new(HubState { issued: AtomicUsize::new(0), accept_from: AtomicUsize::new(1), expires_in });
        let st = state.clone();
        let server = FakeServer::start("127.0.0.1", move |addr| {
            let addr = addr.to_string();
            Box::new(move |req: &Req| {
                if req.path_only() == "/token" {
                    let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
                    let issued_at = jiff::Timestamp::now().to_string();
                    // Docker Hub sends both names; send the OAuth2 one only on odd tokens
                    // to see that either is taken.
                    let token = format!("tok-{n}");
                    let body = if n % 2 == 1 {
                        serde_json::json!({"access_token": token, "expires_in": st.expires_in, "issued_at": issued_at})
                    } else {
                        serde_json::json!({"token": token, "expires_in": st.expires_in, "issued_at": issued_at})
                    };
                    return Reply::new(200).json(body);
                }
                let authorised = req
                    .header("authorization")
                    .and_then(|a| a.strip_prefix("Bearer tok-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= st.accept_from.load(Ordering::SeqCst));
                if !authorised {
                    let challenge = format!(
                        r#"Bearer realm="http://{addr}/token",service="{HUB_SERVICE}",scope="repository:lib/x:pull""#
                    );
                    return Reply::new(401).header("WWW-Authenticate", &challenge).json(serde_json::json!(
                        {"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}
                    ));
                }
                match (req.path_only(), &blob) {
                    ("/v2/lib/x/manifests/latest", _) => {
                        Reply::new(200).header("Content-Type", OCI_MANIFEST).body(manifest.clone())
                    }
                    (p, Some((data, redirect))) if p.starts_with("/v2/lib/x/blobs/") => match redirect {
                        Some(to) => Reply::new(307).header("Location", to),
                        None => serve_range(req, data),
                    },
                    _ => Reply::new(404),
                }
            })
        });
        FakeHub { server, state }
    }
}

#[test]
fn bearer_tokens_are_fetched_reused_and_renewed() {
    let manifest = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    let hub = FakeHub::start(2, manifest.clone(), None);
    let (c, r) = (client(), hub.server.addr.clone());

    // 401 challenge -> token -> the same request again with the token.
    let m = c.get_manifest(&r, "lib/x", "latest").unwrap();
    assert_eq!(m.body, manifest);
    let reqs = hub.server.requests();
    let paths: Vec<&str> = reqs.iter().map(|q| q.path_only()).collect();
    assert_eq!(paths, ["/v2/lib/x/manifests/latest", "/token", "/v2/lib/x/manifests/latest"]);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[1].query("service").as_deref(), Some(HUB_SERVICE));
    assert_eq!(reqs[1].query("scope").as_deref(), Some("repository:lib/x:pull"));
    assert_eq!(reqs[1].header("authorization"), None, "anonymous token request");
    assert_eq!(reqs[2].header("authorization"), Some("Bearer tok-1"));
    assert!(reqs[2].header("accept").unwrap().contains(OCI_MANIFEST));

    // Reused while it lives: no trip to the token service.
    c.get_manifest(&r, "lib/x", "latest").unwrap();
    assert_eq!(hub.server.count("/token"), 1);
    assert_eq!(hub.server.requests().last().unwrap().header("authorization"), Some("Bearer tok-1"));

    // The registry stops taking it before we think it expired: renewed once on the 401.
    hub.state.accept_from.store(2, Ordering::SeqCst);
    c.get_manifest(&r, "lib/x", "latest").unwrap();
    assert_eq!(hub.server.count("/token"), 2);
    assert_eq!(hub.server.requests().last().unwrap().header("authorization"), Some("Bearer tok-2"));

    // Past `expires_in` (2 s) the old token is not sent again.
    std::thread::sleep(Duration::from_millis(2100));
    c.get_manifest(&r, "lib/x", "latest").unwrap();
    assert_eq!(hub.server.count("/token"), 3);
    let auths: Vec<Option<String>> =
        hub.server.requests().iter().rev().take(3).map(|q| q.header("authorization").map(String::from)).collect();
    assert_eq!(auths, [Some("Bearer tok-3".to_string()), None, None], "the renewed token, after no stale one");
}

#[test]
fn a_token_refused_again_is_unauthorized() {
    let hub = FakeHub::start(60, b"{}".to_vec(), None);
    hub.state.accept_from.store(usize::MAX, Ordering::SeqCst);
    let e = client().get_manifest(&hub.server.addr, "lib/x", "latest").unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(!e.is_not_found() && !e.is_transient());
    assert_eq!(
        e.to_string(),
        format!(
            "access to manifest {0}/lib/x:latest denied by registry {0}: authentication required \
             (the repository may not exist, or may need credentials: docker login)",
            hub.server.addr
        )
    );
    assert_eq!(hub.server.count("/token"), 1, "one renewal, then give up");
}

/// A docker config dir whose `config.json` holds `auths`.
fn docker_config(auths: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap())
        .unwrap();
    dir
}

fn client_with_config(dir: &tempfile::TempDir) -> Client {
    Client::new(ClientOptions { docker_config_dir: Some(dir.path().to_path_buf()), ..Default::default() }).unwrap()
}

#[test]
fn basic_credentials_from_the_docker_config() {
    use base64::Engine as _;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x"));
    let exp = expected.clone();
    // A registry that speaks plain basic auth (as distribution's htpasswd mode does).
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |req: &Req| {
            if req.header("authorization") == Some(exp.as_str()) {
                Reply::new(200).json(serde_json::json!({"name": "a", "tags": ["t"]}))
            } else {
                Reply::new(401).header("WWW-Authenticate", r#"Basic realm="fake registry""#)
            }
        })
    });
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
    // The key carries a scheme, as `docker login http://…` writes it.
    let cfg = docker_config(serde_json::json!({ format!("http://{}", server.addr): {"auth": auth} }));
    let c = client_with_config(&cfg);
    assert_eq!(c.list_tags(&server.addr, "a").unwrap(), ["t"]);
    assert_eq!(c.list_tags(&server.addr, "a").unwrap(), ["t"]);
    let auths: Vec<Option<String>> =
        server.requests().iter().map(|q| q.header("authorization").map(String::from)).collect();
    // Challenged once; after that the credentials go along from the start.
    assert_eq!(auths, [None, Some(expected.clone()), Some(expected)]);

    // Without credentials the challenge cannot be met.
    let e = client().list_tags(&server.addr, "a").unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(e.to_string().starts_with(&format!("access to the tag list of {}/a denied", server.addr)), "{e}");
}

#[test]
fn the_token_request_carries_configured_credentials() {
    use base64::Engine as _;
    let hub = FakeHub::start(60, b"{}".to_vec(), None);
    let cfg = docker_config(serde_json::json!({ hub.server.addr.clone(): {"username": "bob", "password": "pw"} }));
    client_with_config(&cfg).get_manifest(&hub.server.addr, "lib/x", "latest").unwrap();
    let token_req = hub.server.requests().into_iter().find(|q| q.path_only() == "/token").unwrap();
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:pw"));
    assert_eq!(token_req.header("authorization"), Some(basic.as_str()));
}

#[test]
fn a_redirect_to_another_host_goes_without_the_authorization_header() {
    // Docker Hub answers blob GETs with a 307 to a CDN on another host, whose signed
    // URL is the only credential it wants.
    let blob = noise(200_000, 4);
    let d = Digest::of(&blob);
    let data = blob.clone();
    // 127.0.0.2 is loopback too, but another host than 127.0.0.1.
    let cdn = FakeServer::start("127.0.0.2", move |_| Box::new(move |req: &Req| serve_range(req, &data)));
    let to = format!("http://{}/blobs/{}?sig=abc", cdn.addr, d.hex());
    let hub = FakeHub::start(60, b"{}".to_vec(), Some((blob.clone(), Some(to))));
    let (c, r) = (client(), hub.server.addr.clone());

    assert_eq!(download(&c, &r, "lib/x", &d, Some(blob.len() as u64)).unwrap(), blob);
    assert_eq!(c.read_blob_range(&r, "lib/x", &d, 1000, 24).unwrap(), &blob[1000..1024]);

    let at_registry = hub.server.requests();
    assert!(at_registry
        .iter()
        .any(|q| q.path_only().starts_with("/v2/lib/x/blobs/") && q.header("authorization") == Some("Bearer tok-1")));
    let at_cdn = cdn.requests();
    assert_eq!(at_cdn.len(), 2);
    for q in &at_cdn {
        assert_eq!(q.header("authorization"), None, "Authorization leaked to the CDN: {q:?}");
        assert_eq!(q.query("sig").as_deref(), Some("abc"));
    }
    assert_eq!(at_cdn[1].header("range"), Some("bytes=1000-1023"), "Range goes along the redirect");
}

#[test]
fn a_download_resumes_after_the_connection_drops() {
    let blob = noise(300_000, 5);
    let d = Digest::of(&blob);
    let data = blob.clone();
    let first = Arc::new(AtomicBool::new(true));
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |req: &Req| {
            if first.swap(false, Ordering::SeqCst) {
                // Half the blob, then the connection goes away.
                return Reply::new(200).body(data.clone()).cut_after(data.len() / 2);
            }
            serve_range(req, &data)
        })
    });
    let got = download(&client(), &server.addr, "lib/x", &d, Some(blob.len() as u64)).unwrap();
    assert_eq!(got, blob);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("range"), None);
    let (from, to) = parse_range(reqs[1].header("range").expect("the retry asks for the rest only"));
    assert!(from > 0 && from <= blob.len() / 2 && to.is_none(), "{from}");
}

#[test]
fn a_resume_answered_with_200_starts_over() {
    let blob = noise(300_000, 6);
    let d = Digest::of(&blob);
    let data = blob.clone();
    let first = Arc::new(AtomicBool::new(true));
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |_req: &Req| {
            let reply = Reply::new(200).body(data.clone());
            // Range is ignored throughout; the first answer is cut short.
            if first.swap(false, Ordering::SeqCst) {
                reply.cut_after(100_000)
            } else {
                reply
            }
        })
    });
    let got = download(&client(), &server.addr, "lib/x", &d, None).unwrap();
    assert_eq!(got, blob);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].header("range").is_some());
}

#[test]
fn a_transfer_that_keeps_breaking_gives_up_after_five_retries() {
    let blob = noise(100_000, 7);
    let d = Digest::of(&blob);
    let data = blob.clone();
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |_req: &Req| Reply::new(200).body(data.clone()).cut_after(1000))
    });
    let e = download(&client(), &server.addr, "lib/x", &d, Some(blob.len() as u64)).unwrap_err();
    assert!(matches!(e, RegistryError::Interrupted { attempts: 6, .. }), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(server.requests().len(), 6);
    assert!(e.to_string().starts_with(&format!("download of blob {}/lib/x@{d} from registry", server.addr)), "{e}");
}

#[test]
fn a_range_answered_with_200_is_cut_to_size() {
    let blob = noise(50_000, 8);
    let d = Digest::of(&blob);
    let data = blob.clone();
    // A registry that ignores Range and always sends the whole blob.
    let server =
        FakeServer::start("127.0.0.1", move |_| Box::new(move |_req: &Req| Reply::new(200).body(data.clone())));
    let (c, r) = (client(), server.addr.clone());
    assert_eq!(c.read_blob_range(&r, "lib/x", &d, 12_345, 1000).unwrap(), &blob[12_345..13_345]);
    assert_eq!(c.read_blob_range(&r, "lib/x", &d, 49_990, 1000).unwrap(), &blob[49_990..]);
    assert_eq!(c.read_blob_range(&r, "lib/x", &d, 60_000, 10).unwrap(), b"");
    assert_eq!(server.requests()[0].header("range"), Some("bytes=12345-13344"));
}

#[test]
fn tag_lists_follow_link_pages() {
    // distribution 2.8 ignores `n` on tag lists (newer registries and Docker Hub don't),
    // so the paging itself is shown here: pages of `n` tags, `Link: <…>; rel="next"`.
    let all: Vec<String> = (1..=5).map(|i| format!("t{i}")).collect();
    let tags = all.clone();
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |req: &Req| {
            let n: usize = req.query("n").unwrap().parse().unwrap();
            let start = match req.query("last") {
                Some(last) => tags.iter().position(|t| *t == last).unwrap() + 1,
                None => 0,
            };
            let page: Vec<&String> = tags.iter().skip(start).take(n).collect();
            let mut reply = Reply::new(200).json(serde_json::json!({"name": "lib/x", "tags": page}));
            if start + n < tags.len() {
                let link = format!(r#"</v2/lib/x/tags/list?n={n}&last={}>; rel="next""#, page.last().unwrap());
                reply = reply.header("Link", &link);
            }
            reply
        })
    });
    assert_eq!(client().with_page_size(2).list_tags(&server.addr, "lib/x").unwrap(), all);
    let queries: Vec<String> = server.requests().iter().map(|q| q.path.clone()).collect();
    assert_eq!(
        queries,
        ["/v2/lib/x/tags/list?n=2", "/v2/lib/x/tags/list?n=2&last=t2", "/v2/lib/x/tags/list?n=2&last=t4"]
    );
}

#[test]
fn a_next_page_link_to_another_host_is_not_followed() {
    // The next page would be asked for with this registry's credentials: a registry (or
    // anything that can set its headers) must not be able to send them elsewhere.
    let elsewhere = FakeServer::start("127.0.0.1", |_| {
        Box::new(|_req: &Req| Reply::new(200).json(serde_json::json!({"name": "lib/x", "tags": ["stolen"]})))
    });
    let link = format!(r#"<http://{}/v2/lib/x/tags/list?last=t1>; rel="next""#, elsewhere.addr);
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |_req: &Req| {
            Reply::new(200).json(serde_json::json!({"name": "lib/x", "tags": ["t1"]})).header("Link", &link)
        })
    });
    let e = client().list_tags(&server.addr, "lib/x").unwrap_err().to_string();
    assert!(e.contains("the next-page link leads to another host"), "{e}");
    assert!(elsewhere.requests().is_empty(), "the other host was asked: {:?}", elsewhere.requests().len());
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let served = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    let body = served.clone();
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |_req: &Req| Reply::new(200).header("Content-Type", "application/json").body(body.clone()))
    });
    let asked = Digest::of(b"something else");
    let e = client().get_manifest(&server.addr, "lib/x", asked.as_str()).unwrap_err();
    match &e {
        RegistryError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(expected, &asked);
            assert_eq!(actual, &Digest::of(&served));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(e.to_string().starts_with(&format!("digest mismatch for manifest {}/lib/x@{asked}", server.addr)));
}

#[test]
fn server_errors_are_transient_and_keep_the_registry_message() {
    let server = FakeServer::start("127.0.0.1", move |_| {
        Box::new(move |_req: &Req| {
            Reply::new(503)
                .json(serde_json::json!({"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}))
        })
    });
    let e = client().get_manifest(&server.addr, "lib/x", "v1").unwrap_err();
    assert!(e.is_transient() && !e.is_not_found(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "registry {0} answered 503 Service Unavailable for manifest {0}/lib/x:v1: down for maintenance",
            server.addr
        )
    );
}

// ---------------------------------------------------------------------------------
// Credentials: where they may go, and where they must never show

/// A loopback registry whose bearer challenge names `realm` and `scope`; it never takes
/// a token (these tests are about what happens before).
fn challenging_registry(realm: &'static str, scope: &'static str) -> FakeServer {
    FakeServer::start("127.0.0.1", move |addr| {
        let realm = realm.replace("{addr}", addr);
        Box::new(move |req: &Req| {
            if req.path_only() == "/token" {
                return Reply::new(401).json(serde_json::json!({"details": "no token for you"}));
            }
            let challenge = format!(r#"Bearer realm="{realm}",service="svc",scope="{scope}""#);
            Reply::new(401).header("WWW-Authenticate", &challenge)
        })
    })
}

/// An HTTPS registry's token realm may be plain HTTP on another host; the Basic
/// credentials must not travel there in the clear. (The registry under test is on
/// loopback; the rule is about the realm's host. `.invalid` never resolves, so no
/// request can leave the machine even without the rule.)
#[test]
fn credentials_never_go_over_plain_http_to_a_remote_token_realm() {
    let server = challenging_registry("http://token.invalid/token", "repository:lib/x:pull");
    let cfg = docker_config(serde_json::json!({ server.addr.clone(): {"username": "bob", "password": "pw"} }));
    let e = client_with_config(&cfg).get_manifest(&server.addr, "lib/x", "latest").unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(
        e.to_string().contains("refusing to send the credentials") && e.to_string().contains("token.invalid"),
        "{e}"
    );
    // A loopback realm over plain HTTP is fine (the other tests use one).
}

#[test]
fn passwords_in_a_realm_url_do_not_show_in_errors() {
    let server = challenging_registry("ftp://user:realm-s3cret@{addr}/token", "repository:lib/x:pull");
    let e = client().get_manifest(&server.addr, "lib/x", "latest").unwrap_err();
    assert!(e.to_string().contains("not an http(s) URL") && !e.to_string().contains("realm-s3cret"), "{e}");
    assert!(!format!("{e:?}").contains("realm-s3cret"), "{e:?}");
}

#[test]
fn tokens_and_passwords_do_not_show_in_errors() {
    let hub = FakeHub::start(60, b"{}".to_vec(), None);
    hub.state.accept_from.store(usize::MAX, Ordering::SeqCst);
    let cfg =
        docker_config(serde_json::json!({ hub.server.addr.clone(): {"username": "bob", "password": "pw-s3cret"} }));
    let e = client_with_config(&cfg).get_manifest(&hub.server.addr, "lib/x", "latest").unwrap_err();
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains("tok-") && !shown.contains("pw-s3cret"), "{shown}");
    }
    assert!(!format!("{:?}", client_with_config(&cfg)).contains("pw-s3cret"));
}

/// A registry may challenge with a wider scope than we need (push too); a token is only
/// ever asked for pulling.
#[test]
fn tokens_are_asked_for_with_pull_scope_only() {
    let server = challenging_registry("http://{addr}/token", "repository:lib/x:pull,push");
    let c = client();
    let _ = c.ping(&server.addr);
    let _ = c.get_manifest(&server.addr, "lib/x", "latest");
    let scopes: Vec<Option<String>> =
        server.requests().iter().filter(|q| q.path_only() == "/token").map(|q| q.query("scope")).collect();
    assert_eq!(scopes, [Some("repository:lib/x:pull".to_string()), Some("repository:lib/x:pull".to_string())]);
}
