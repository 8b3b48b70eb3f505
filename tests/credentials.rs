//! Credentials against real registries: Debian's `docker-registry` with `auth: htpasswd`
//! (basic) and with `auth: token`, the latter trusting a small token issuer run by this
//! test (an HTTP server thread that signs RS256 JWTs with `openssl dgst`, its certificate
//! given to the registry as `rootcertbundle` and sent in the JWT's `x5c`). The image is
//! copied in from the shared test registry by skopeo with `--dest-creds`. Covered:
//! `imgfs login`/`logout` writing docker's config.json, a wrong password, credential
//! helpers (`credHelpers`, `credsStore`) as scripts on PATH, podman's auth.json through
//! REGISTRY_AUTH_FILE, and an identity token traded by the refresh-token grant.

#[path = "registries/mod.rs"]
#[allow(dead_code)] // not every helper of the shared module is needed here
mod registries;

use base64::Engine as _;
use registries::Registry;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

#[path = "outcome/mod.rs"]
mod outcome;
#[path = "pty/mod.rs"]
mod pty;
use outcome::{fails, ok};

const USER: &str = "alice";
const PASS: &str = "s3cret-pass";
const REFRESH: &str = "refresh-token-for-alice";
const IMAGE: &str = "app:1";

fn shared_registry() -> String {
    outcome::registry_addr()
}

/// Copy the test image into `dst` with credentials, as a user of the registry would.
fn push_image(dst: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("--dest-creds={USER}:{PASS}"))
        .arg(format!("docker://{}/{IMAGE}", shared_registry()))
        .arg(format!("docker://{dst}/{IMAGE}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy to {dst}: {}", String::from_utf8_lossy(&out.stderr));
}

fn htpasswd_registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("htpasswd").args(["-Bbn", USER, PASS]).output().expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
    let auth =
        format!("auth:\n  htpasswd:\n    realm: imgfs-test\n    path: {}\n", dir.path().join("htpasswd").display());
    let r = Registry::start(dir, &auth, "");
    push_image(&r.addr);
    r
}

/// A home of its own for each imgfs run: docker's and podman's files live here only,
/// and `bin/` (for credential helpers) comes first on PATH.
struct Home {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let h = Home { dir: tempfile::tempdir().unwrap(), root: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(h.bin()).unwrap();
        h
    }
    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn write_docker_config(&self, json: &serde_json::Value) {
        std::fs::create_dir_all(self.docker_config().parent().unwrap()).unwrap();
        std::fs::write(self.docker_config(), json.to_string()).unwrap();
    }
    fn docker_config_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.docker_config()).unwrap()).unwrap()
    }
    fn command(&self, args: &[&str]) -> Command {
        self.command_in(self.root.path(), args)
    }
    fn command_in(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imgfs"));
        let path = format!("{}:{}", self.bin().display(), std::env::var("PATH").unwrap_or_default());
        c.arg("--root")
            .arg(root)
            .args(args)
            .env("HOME", self.dir.path())
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env("PATH", path)
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
    /// `imgfs login -u USER --password-stdin SERVER` with `password` on stdin.
    fn login(&self, server: &str, password: &str) -> Output {
        let mut child = self
            .command(&["login", "-u", USER, "--password-stdin", server])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
    /// Pull into a fresh store, so that nothing is served from an earlier pull.
    fn pull(&self, reference: &str) -> Output {
        let root = tempfile::tempdir().unwrap();
        let out = self.command_in(root.path(), &["pull", reference]).output().unwrap();
        out
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn login_with_basic_auth_then_pull_inspect_and_logout() {
    let Some(_) = outcome::test_env() else { return };
    let reg = htpasswd_registry();
    let home = Home::new();
    let reference = format!("{}/{IMAGE}", reg.addr);

    // Anonymous: refused.
    let err = fails(&home.pull(&reference));
    assert!(err.contains(&reg.addr), "{err}");

    // A wrong password: one line naming the registry, exit 1, no file written; and an
    // existing file is left byte for byte.
    let err = fails(&home.login(&reg.addr, "wrong"));
    assert!(err.contains(&reg.addr), "{err}");
    assert!(!err.contains("wrong"), "the password was printed: {err}");
    assert!(!home.docker_config().exists());
    home.write_docker_config(&serde_json::json!({"auths": {}, "detachKeys": "ctrl-x"}));
    let before = std::fs::read(home.docker_config()).unwrap();
    fails(&home.login(&reg.addr, "wrong"));
    assert_eq!(std::fs::read(home.docker_config()).unwrap(), before);

    let out = home.login(&reg.addr, PASS);
    assert!(ok(&out).contains("Login Succeeded"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASS));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.docker_config()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let config = home.docker_config_json();
    assert_eq!(config["auths"][&reg.addr]["auth"], b64(&format!("{USER}:{PASS}")));
    assert_eq!(config["detachKeys"], "ctrl-x", "other settings are kept");

    // The saved credentials are used: pull, then inspect without a mount.
    ok(&home.run(&["pull", &reference]));
    let inspect: serde_json::Value = serde_json::from_str(&ok(&home.run(&["inspect", &reference]))).unwrap();
    assert_eq!(inspect[0]["RepoTags"][0], reference);

    let out = ok(&home.run(&["logout", &reg.addr]));
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(home.docker_config_json()["auths"].get(&reg.addr).is_none());
    fails(&home.pull(&reference));
    assert!(ok(&home.run(&["logout", &reg.addr])).contains("Not logged in"));
}

/// `docker-credential-imgfstest`: keeps one credential in $IMGFS_TEST_HELPER_STORE and
/// answers `get` only for the server it was stored for, as docker-credential-helpers do.
fn install_helper(home: &Home) -> PathBuf {
    let store = home.dir.path().join("helper-store.json");
    let script = format!(
        r#"#!/bin/sh
store='{store}'
echo "$1" >> '{store}.calls'
case "$1" in
get) read -r server
     if [ -f "$store" ] && grep -q "\"ServerURL\":\"$server\"" "$store"; then cat "$store"
     else echo "credentials not found in native keychain"; exit 1; fi ;;
store) cat > "$store" ;;
erase) read -r server
     if [ -f "$store" ]; then rm "$store"; else echo "credentials not found in native keychain"; exit 1; fi ;;
*) exit 2 ;;
esac
"#,
        store = store.display()
    );
    let path = home.bin().join("docker-credential-imgfstest");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    store
}

#[test]
fn cred_helpers_and_creds_store_hold_the_secret() {
    let Some(_) = outcome::test_env() else { return };
    let reg = htpasswd_registry();
    let reference = format!("{}/{IMAGE}", reg.addr);

    // credHelpers: login stores through the helper; the file keeps only the key.
    let home = Home::new();
    let store = install_helper(&home);
    home.write_docker_config(&serde_json::json!({"credHelpers": {reg.addr.clone(): "imgfstest"}}));
    ok(&home.login(&reg.addr, PASS));
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(stored, serde_json::json!({"ServerURL": reg.addr, "Username": USER, "Secret": PASS}));
    let config = std::fs::read_to_string(home.docker_config()).unwrap();
    assert!(!config.contains(PASS), "{config}");
    assert_eq!(home.docker_config_json()["auths"][&reg.addr], serde_json::json!({}));
    ok(&home.pull(&reference));
    ok(&home.run(&["logout", &reg.addr]));
    assert!(!store.exists(), "logout did not erase the helper's credentials");
    fails(&home.pull(&reference));

    // credsStore: a helper for every registry, found on PATH.
    let home = Home::new();
    let store = install_helper(&home);
    let entry = serde_json::json!({"ServerURL": reg.addr, "Username": USER, "Secret": PASS});
    std::fs::write(&store, entry.to_string()).unwrap();
    home.write_docker_config(&serde_json::json!({"auths": {reg.addr.clone(): {}}, "credsStore": "imgfstest"}));
    ok(&home.pull(&reference));
    let calls = std::fs::read_to_string(format!("{}.calls", store.display())).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["get"], "asked once, for the one registry");

    // A helper that is not installed: an error naming it.
    home.write_docker_config(&serde_json::json!({"credsStore": "absent"}));
    let err = fails(&home.pull(&reference));
    assert!(err.contains("docker-credential-absent"), "{err}");
}

#[test]
fn podman_auth_file_is_read_and_registry_auth_file_wins() {
    let Some(_) = outcome::test_env() else { return };
    let reg = htpasswd_registry();
    let reference = format!("{}/{IMAGE}", reg.addr);
    let home = Home::new();
    let good = serde_json::json!({"auths": {reg.addr.clone(): {"auth": b64(&format!("{USER}:{PASS}"))}}});
    let bad = serde_json::json!({"auths": {reg.addr.clone(): {"auth": b64(&format!("{USER}:nope"))}}});

    // Where `podman login` writes.
    let run_auth = home.dir.path().join("run/containers/auth.json");
    std::fs::create_dir_all(run_auth.parent().unwrap()).unwrap();
    std::fs::write(&run_auth, good.to_string()).unwrap();
    ok(&home.pull(&reference));

    // docker's config.json (what `imgfs login` writes) comes before podman's defaults...
    home.write_docker_config(&bad);
    let err = fails(&home.pull(&reference));
    assert!(err.contains(&reg.addr), "{err}");

    // ...and REGISTRY_AUTH_FILE, set on purpose, before both.
    let explicit = home.dir.path().join("explicit-auth.json");
    std::fs::write(&explicit, good.to_string()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out =
        home.command_in(root.path(), &["pull", &reference]).env("REGISTRY_AUTH_FILE", &explicit).output().unwrap();
    ok(&out);
}

/// What the token issuer was asked, for the test to check.
#[derive(Default)]
struct Issued {
    basic: usize,
    refresh: usize,
    refused: usize,
}

/// A token service as distribution's token-auth spec describes it: GET with basic auth
/// (or the OAuth2 POST refresh-token grant) returns a JWT granting the scopes asked for,
/// signed RS256 by the key whose certificate the registry trusts.
struct TokenIssuer {
    addr: String,
    issued: Arc<Mutex<Issued>>,
}

impl TokenIssuer {
    fn start(dir: &Path) -> TokenIssuer {
        let key = dir.join("issuer.key");
        let cert = dir.join("issuer.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=imgfs-test-issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        // The PEM body is the certificate's DER in base64: what x5c holds.
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(Mutex::new(Issued::default()));
        let state = issued.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = serve_token(conn, &key, &der_b64, &state);
            }
        });
        TokenIssuer { addr, issued }
    }
}

fn serve_token(mut conn: TcpStream, key: &Path, x5c: &str, issued: &Mutex<Issued>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut authorization, mut length) = (None, 0usize);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://x/?{query}&{}", String::from_utf8_lossy(&body)))
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let basic_ok = authorization.as_deref() == Some(&format!("Basic {}", b64(&format!("{USER}:{PASS}"))));
    let refresh_ok = request_line.starts_with("POST ")
        && param("grant_type").as_deref() == Some("refresh_token")
        && param("refresh_token").as_deref() == Some(REFRESH);
    {
        let mut i = issued.lock().unwrap();
        match (basic_ok, refresh_ok) {
            (true, _) => i.basic += 1,
            (_, true) => i.refresh += 1,
            // Anonymous requests get a token with no access, as real services do.
            _ if authorization.is_none() && !request_line.starts_with("POST ") => {}
            _ => i.refused += 1,
        }
    }
    let authenticated = basic_ok || refresh_ok;
    if !authenticated && (authorization.is_some() || request_line.starts_with("POST ")) {
        let msg = r#"{"details":"incorrect username or password"}"#;
        return write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        );
    }
    let access: Vec<serde_json::Value> = params
        .iter()
        .filter(|(k, _)| k == "scope" && authenticated)
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|item| {
            let (kind, rest) = item.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let url64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "imgfs-test-issuer", "sub": if authenticated { USER } else { "" }, "aud": "imgfs-test",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let signing_input = format!("{}.{}", url64(header.to_string().as_bytes()), url64(claims.to_string().as_bytes()));
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl.stdin.take().unwrap().write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let jwt = format!("{signing_input}.{}", url64(&signature));
    let answer = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300});
    let answer = answer.to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn token_registry() -> (Registry, TokenIssuer) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(dir.path());
    let auth = format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: imgfs-test\n    issuer: imgfs-test-issuer\n    \
         rootcertbundle: {}\n",
        issuer.addr,
        dir.path().join("issuer.pem").display()
    );
    let r = Registry::start(dir, &auth, "");
    push_image(&r.addr);
    (r, issuer)
}

#[test]
fn token_auth_login_pull_and_identity_token() {
    let Some(_) = outcome::test_env() else { return };
    let (reg, issuer) = token_registry();
    let reference = format!("{}/{IMAGE}", reg.addr);
    let home = Home::new();

    fails(&home.pull(&reference));
    let err = fails(&home.login(&reg.addr, "wrong"));
    assert!(err.contains(&reg.addr) && err.contains("incorrect username or password"), "{err}");
    assert!(!home.docker_config().exists());

    ok(&home.login(&reg.addr, PASS));
    ok(&home.run(&["pull", &reference]));
    let inspect: serde_json::Value = serde_json::from_str(&ok(&home.run(&["inspect", &reference]))).unwrap();
    assert_eq!(inspect[0]["RepoTags"][0], reference);

    // An identity token (docker's `identitytoken`) is traded by the refresh grant;
    // the inline `auth` beside it is not what gets sent.
    let home = Home::new();
    let bogus = b64(&format!("{USER}:not-the-password"));
    home.write_docker_config(
        &serde_json::json!({"auths": {reg.addr.clone(): {"auth": bogus, "identitytoken": REFRESH}}}),
    );
    let before = {
        let i = issuer.issued.lock().unwrap();
        (i.basic, i.refresh, i.refused)
    };
    ok(&home.pull(&reference));
    let issued = issuer.issued.lock().unwrap();
    assert!(issued.refresh > before.1, "no refresh-token grant was asked for");
    assert_eq!((issued.basic, issued.refused), (before.0, before.2), "the inline auth was sent (or refused) too");
}

/// Read the pty's master side until `want` has appeared (or the other side is gone).
fn read_until(master: &mut std::fs::File, seen: &mut String, want: &str) {
    let mut buf = [0u8; 512];
    while !seen.contains(want) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => return, // EIO: the last holder of the terminal closed it
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[test]
fn login_asks_on_the_terminal_without_echo() {
    let Some(_) = outcome::test_env() else { return };
    let reg = htpasswd_registry();
    let home = Home::new();
    let (mut child, mut master) = pty::spawn(home.command(&["login", &reg.addr]), None);
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "Username: ");
    master.write_all(format!("{USER}\n").as_bytes()).unwrap();
    read_until(&mut master, &mut seen, "Password: ");
    master.write_all(format!("{PASS}\n").as_bytes()).unwrap();
    read_until(&mut master, &mut seen, "\u{0}never");
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("Login Succeeded"), "{seen}");
    assert!(seen.contains(USER), "the user name is echoed as typed: {seen}");
    assert!(!seen.contains(PASS), "the password was echoed: {seen}");
    assert_eq!(home.docker_config_json()["auths"][&reg.addr]["auth"], b64(&format!("{USER}:{PASS}")));
}
