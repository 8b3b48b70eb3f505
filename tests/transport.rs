//! How imgfs reaches registries: TLS with private CAs and client certificates from
//! docker's and podman's `certs.d`, HTTPS and plain HTTP on loopback and for hosts named
//! insecure, and mirrors from podman's registries.conf and docker's daemon.json. Every
//! registry here is Debian's real `docker-registry` (tests/registries), serving TLS with
//! certificates `openssl` makes in the test, or running as a pull-through cache of the
//! shared test registry; images are copied into them with `skopeo`.

#[path = "registries/mod.rs"]
mod registries;

use registries::Registry;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::{fails, ok};

/// The shared test registry that scripts/test starts (plain HTTP on loopback).
fn shared_addr() -> String {
    outcome::registry_addr()
}

/// imgfs with its own store, and the machine's mirror configuration replaced by files
/// of the test's (none by default), so that no test sees another's or the machine's.
fn imgfs(root: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
    cmd.arg("--root").arg(root).args(args);
    cmd.env("CONTAINERS_REGISTRIES_CONF", "/nonexistent/registries.conf");
    cmd.env("IMGFS_DAEMON_JSON", "/nonexistent/daemon.json");
    cmd.env("DOCKER_CONFIG", "/nonexistent/docker-config");
    cmd.env_remove("IMGFS_INSECURE_REGISTRIES");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The image IDs in a store.
fn stored_images(root: &Path) -> String {
    ok(&imgfs(root, &[], &["ls", "-q"]))
}

/// Copy `base:1` from the shared registry to `dest` (`host:port/repo:tag`) with skopeo;
/// `cert_dir` holds the CA (and client certificate) for a TLS destination.
fn copy_base_image(dest: &str, cert_dir: Option<&Path>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
    match cert_dir {
        Some(d) => cmd.arg("--dest-cert-dir").arg(d),
        None => cmd.arg("--dest-tls-verify=false"),
    };
    cmd.arg(format!("docker://{}/base:1", shared_addr())).arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// A non-loopback IPv4 address of this machine (the first interface that is up and has
/// one). A registry listening there is reached the way a remote one is: imgfs treats
/// only loopback addresses as insecure, so this is what proves certificates are
/// checked. Found with getifaddrs, which needs no route, DNS name or /etc/hosts entry.
fn host_ip() -> String {
    let mut found = None;
    // SAFETY: getifaddrs(3) hands back a list it allocated, valid until freeifaddrs,
    // which is called once at the end; the loop only reads nodes of that list, follows
    // ifa_next to the null that ends it, dereferences ifa_addr only when it is not null,
    // and reads it as sockaddr_in only when its family says AF_INET. Nothing read
    // outlives the list (the address is copied out).
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs failed");
        let mut p = list;
        while !p.is_null() {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                && ifa.ifa_flags & libc::IFF_UP as u32 != 0
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                if !ip.is_loopback() && found.is_none() {
                    found = Some(ip.to_string());
                }
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.expect("this machine has no non-loopback IPv4 address to serve a verified-TLS registry on")
}

/// A private CA, and certificates it signed: one for a server at an IP address, one for
/// a client. Made with openssl in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, server_ip: &str) -> Pki {
        let pki = Pki { dir: dir.join("pki") };
        std::fs::create_dir_all(&pki.dir).unwrap();
        let d = &pki.dir;
        let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=imgfs test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        for (name, ext) in [
            ("server", format!("subjectAltName=IP:{server_ip},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")),
            ("client", "extendedKeyUsage=clientAuth\n".to_string()),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.cert"));
            openssl(
                &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN=imgfs {name}")]].concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `http:` lines for docker-registry to serve TLS (and to demand a client
    /// certificate signed by the CA, with `client_ca`).
    fn registry_tls(&self, client_ca: bool) -> String {
        let mut s =
            format!("  tls:\n    certificate: {}\n    key: {}\n", self.path("server.cert"), self.path("server.key"));
        if client_ca {
            s.push_str(&format!("    clientcas:\n      - {}\n", self.path("ca.crt")));
        }
        s
    }

    /// A directory laid out as certs.d wants it (for skopeo's --dest-cert-dir).
    fn cert_dir(&self, with_client: bool) -> PathBuf {
        let d = self.dir.join(if with_client { "certs-client" } else { "certs" });
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.dir.join("ca.crt"), d.join("ca.crt")).unwrap();
        if with_client {
            std::fs::copy(self.dir.join("client.cert"), d.join("client.cert")).unwrap();
            std::fs::copy(self.dir.join("client.key"), d.join("client.key")).unwrap();
        }
        d
    }
}

/// `ROOT/certs.d/ADDR/` for a registry of this test alone (its port is unique), removed
/// when dropped, even when the test fails.
struct CertsD(PathBuf);

impl CertsD {
    fn new(root: &str, addr: &str) -> CertsD {
        let d = Path::new(root).join(addr);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {} (run as root): {e}", d.display()));
        CertsD(d)
    }

    fn add(&self, from: &Path, name: &str) {
        std::fs::copy(from, self.0.join(name)).unwrap();
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_registry_with_a_private_ca_is_trusted_through_docker_certs_d() {
    let Some(_) = outcome::test_env() else { return };
    let ip = host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), &ip);
    let reg = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &pki.registry_tls(false));
    copy_base_image(&format!("{}/base:1", reg.addr), Some(&pki.cert_dir(false)));
    let image = format!("{}/base:1", reg.addr);
    let root = tmp.path().join("store");

    // Not trusted: one line naming the host and where its CA goes; nothing stored.
    let err = fails(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert!(err.contains(&format!("TLS certificate of {} is not trusted", reg.addr)), "{err}");
    assert!(err.contains(&format!("/etc/docker/certs.d/{}/ca.crt", reg.addr)), "{err}");
    assert_eq!(stored_images(&root), "");

    // Named insecure: HTTPS without checking the certificate.
    ok(&imgfs(&root, &[], &["--insecure-registry", &reg.addr, "pull", "-q", &image]));
    ok(&imgfs(&root, &[], &["rm", &image]));

    // The CA in certs.d: checked and trusted.
    let certs = CertsD::new("/etc/docker/certs.d", &reg.addr);
    certs.add(&pki.dir.join("ca.crt"), "ca.crt");
    ok(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert_ne!(stored_images(&root), "");
    let log = reg.log_with(&["GET /v2/base/manifests/1".to_string()]);
    assert!(log.contains("GET /v2/base/manifests/1"), "{log}");
}

#[test]
fn the_system_trust_store_is_trusted() {
    let Some(_) = outcome::test_env() else { return };
    // rustls-native-certs reads the system store, or the file SSL_CERT_FILE names
    // instead (as OpenSSL does): the private CA given that way, and nothing in certs.d.
    let ip = host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), &ip);
    let reg = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &pki.registry_tls(false));
    copy_base_image(&format!("{}/base:1", reg.addr), Some(&pki.cert_dir(false)));
    let root = tmp.path().join("store");
    let ca = pki.path("ca.crt");
    ok(&imgfs(&root, &[("SSL_CERT_FILE", &ca)], &["pull", "-q", &format!("{}/base:1", reg.addr)]));
    assert_ne!(stored_images(&root), "");
}

/// A self-signed certificate and key made exactly as docker's registry guide makes
/// them ("Run an externally-accessible registry": `openssl req -newkey rsa:4096 -nodes
/// -sha256 -keyout domain.key -addext "subjectAltName = IP:…" -x509 -days 365 -out
/// domain.crt`), for `san_ip`, in `dir/NAME.crt` and `dir/NAME.key`. OpenSSL marks it
/// CA:TRUE, so it is both the server's certificate and the anchor a client trusts.
fn docker_guide_certificate(dir: &Path, name: &str, san_ip: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:4096", "-nodes", "-sha256", "-keyout"])
        .arg(&key)
        .args(["-addext", &format!("subjectAltName = IP:{san_ip}"), "-x509", "-days", "365", "-out"])
        .arg(&crt)
        .args(["-subj", &format!("/CN={san_ip}")]));
    let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&crt).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"), "openssl no longer marks it CA:TRUE");
    (crt, key)
}

/// The same certificate's twin that expired in 2020 (same key, name and CA:TRUE), signed
/// by itself through `openssl ca`, the one openssl command that takes a start date.
fn expired_twin(dir: &Path, key: &Path, san_ip: &str) -> PathBuf {
    let d = dir.join("expired-ca");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "01\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(&d).args(args));
    let key = key.to_str().unwrap();
    let san = format!("subjectAltName = IP:{san_ip}");
    openssl(&["req", "-new", "-key", key, "-subj", &format!("/CN={san_ip}"), "-addext", &san, "-out", "x.csr"]);
    openssl(&["req", "-in", "x.csr", "-noout"]);
    openssl(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-selfsign",
        "-keyfile",
        key,
        "-in",
        "x.csr",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200201000000Z",
        "-extfile",
        "/dev/null",
        "-out",
        "expired.crt",
    ]);
    d.join("expired.crt")
}

/// The `http:` lines for docker-registry to serve TLS with `crt` and `key`.
fn serve_tls(crt: &Path, key: &Path) -> String {
    format!("  tls:\n    certificate: {}\n    key: {}\n", crt.display(), key.display())
}

#[test]
fn docker_guide_self_signed_certificate_is_trusted_as_its_own_anchor() {
    let Some(_) = outcome::test_env() else { return };
    // docker (Go), skopeo and curl accept a server certificate that is itself one of the
    // anchors configured for the host, though it says CA:TRUE; webpki alone refuses it as
    // "CaUsedAsEndEntity". Its name and dates are still checked.
    let ip = host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let (crt, key) = docker_guide_certificate(tmp.path(), "domain", &ip);
    let reg = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &serve_tls(&crt, &key));
    copy_base_image(&format!("{}/base:1", reg.addr), None);
    let image = format!("{}/base:1", reg.addr);

    // In certs.d, as docker's guide says to place it.
    let root = tmp.path().join("store-certs-d");
    let certs = CertsD::new("/etc/docker/certs.d", &reg.addr);
    certs.add(&crt, "ca.crt");
    ok(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert_ne!(stored_images(&root), "");
    drop(certs);

    // In the system store, through SSL_CERT_FILE.
    let root = tmp.path().join("store-ssl-cert-file");
    ok(&imgfs(&root, &[("SSL_CERT_FILE", crt.to_str().unwrap())], &["pull", "-q", &image]));
    assert_ne!(stored_images(&root), "");

    // Trusted as an anchor, but for another address: refused, naming the mismatch.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let elsewhere = if ip == "192.0.2.1" { "192.0.2.3" } else { "192.0.2.1" };
    let (wrong_name, wrong_key) = docker_guide_certificate(&other, "domain", elsewhere);
    let reg2 = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &serve_tls(&wrong_name, &wrong_key));
    copy_base_image(&format!("{}/base:1", reg2.addr), None);
    let root = tmp.path().join("store-wrong-name");
    let certs = CertsD::new("/etc/docker/certs.d", &reg2.addr);
    certs.add(&wrong_name, "ca.crt");
    let err = fails(&imgfs(&root, &[], &["pull", "-q", &format!("{}/base:1", reg2.addr)]));
    assert!(err.contains(&format!("TLS certificate of {} is not trusted", reg2.addr)), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    assert_eq!(stored_images(&root), "");
    drop(certs);

    // Trusted as an anchor, the right name, but expired: refused.
    let expired = expired_twin(tmp.path(), &key, &ip);
    let reg3 = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &serve_tls(&expired, &key));
    copy_base_image(&format!("{}/base:1", reg3.addr), None);
    let root = tmp.path().join("store-expired");
    let certs = CertsD::new("/etc/docker/certs.d", &reg3.addr);
    certs.add(&expired, "ca.crt");
    let err = fails(&imgfs(&root, &[], &["pull", "-q", &format!("{}/base:1", reg3.addr)]));
    assert!(err.contains(&format!("TLS certificate of {} is not trusted", reg3.addr)), "{err}");
    assert!(err.contains("expired"), "{err}");
    assert_eq!(stored_images(&root), "");
    let err = fails(&imgfs(
        &root,
        &[("SSL_CERT_FILE", expired.to_str().unwrap())],
        &["pull", "-q", &format!("{}/base:1", reg3.addr)],
    ));
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn mutual_tls_takes_the_client_certificate_from_containers_certs_d() {
    let Some(_) = outcome::test_env() else { return };
    let ip = host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), &ip);
    let reg = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", &pki.registry_tls(true));
    copy_base_image(&format!("{}/base:1", reg.addr), Some(&pki.cert_dir(true)));
    let image = format!("{}/base:1", reg.addr);
    let root = tmp.path().join("store");

    // The CA alone: the registry refuses the handshake for want of a client certificate.
    let certs = CertsD::new("/etc/containers/certs.d", &reg.addr);
    certs.add(&pki.dir.join("ca.crt"), "ca.crt");
    let err = fails(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert!(err.contains(&format!("client.cert and client.key in /etc/docker/certs.d/{}/", reg.addr)), "{err}");
    assert_eq!(stored_images(&root), "");

    // With client.cert and client.key beside it, the pull goes through.
    certs.add(&pki.dir.join("client.cert"), "client.cert");
    certs.add(&pki.dir.join("client.key"), "client.key");
    ok(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert_ne!(stored_images(&root), "");
}

#[test]
fn tls_registry_on_loopback_works_without_any_certificate_setup() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "127.0.0.1");
    let reg = Registry::start(tempfile::tempdir().unwrap(), "", &pki.registry_tls(false));
    copy_base_image(&format!("{}/base:1", reg.addr), None);
    let root = tmp.path().join("store");
    // Plain HTTP is tried first on loopback; the registry answers 400 to it, and HTTPS
    // (certificate unchecked, as docker does for loopback) follows.
    ok(&imgfs(&root, &[], &["pull", "-q", &format!("{}/base:1", reg.addr)]));
    assert_ne!(stored_images(&root), "");
    assert!(reg.path().join("registry.yml").exists());
}

#[test]
fn plain_http_registry_on_loopback_still_works() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    ok(&imgfs(&root, &[], &["pull", "-q", &format!("{}/base:1", shared_addr())]));
    assert_ne!(stored_images(&root), "");
}

#[test]
fn plain_http_registry_off_loopback_needs_naming_insecure() {
    let Some(_) = outcome::test_env() else { return };
    let ip = host_ip();
    let reg = Registry::start_on(&ip, tempfile::tempdir().unwrap(), "", "");
    copy_base_image(&format!("{}/base:1", reg.addr), None);
    let image = format!("{}/base:1", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    // Not named: HTTPS only, which a plain-HTTP registry cannot answer. rustls alone
    // says "received corrupt message of type InvalidContentType"; the error says what
    // that means and what to do.
    let err = fails(&imgfs(&root, &[], &["pull", "-q", &image]));
    assert!(err.contains(&reg.addr), "{err}");
    assert!(err.contains("answered the TLS handshake with plain HTTP"), "{err}");
    assert!(err.contains(&format!("--insecure-registry {}", reg.addr)), "{err}");
    assert_eq!(stored_images(&root), "");
    // Named insecure: HTTPS is tried first and fails, plain HTTP answers.
    ok(&imgfs(&root, &[("IMGFS_INSECURE_REGISTRIES", &reg.addr)], &["pull", "-q", &image]));
    assert_ne!(stored_images(&root), "");
}

/// A docker-registry running as a pull-through cache of the shared test registry.
fn pull_through_cache() -> Registry {
    Registry::start(tempfile::tempdir().unwrap(), &format!("proxy:\n  remoteurl: http://{}\n", shared_addr()), "")
}

/// The layer digests of the shared registry's `base:1`.
fn base_layers() -> Vec<String> {
    let body = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/base/manifests/1", shared_addr()))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap()
        .text()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let layers: Vec<String> =
        v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    assert!(!layers.is_empty());
    layers
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn registries_conf_mirror_serves_the_pull_and_a_dead_one_is_passed_over() {
    let Some(_) = outcome::test_env() else { return };
    let mirror = pull_through_cache();
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("registries.conf");
    let dead = format!("127.0.0.1:{}", dead_port());
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{}\"\n\n[[registry.mirror]]\n\
             location = \"{dead}\"\n\n[[registry.mirror]]\nlocation = \"{}\"\n",
            shared_addr(),
            mirror.addr
        ),
    )
    .unwrap();
    let root = tmp.path().join("store");
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    ok(&imgfs(&root, &env, &["pull", "-q", &format!("{}/base:1", shared_addr())]));
    // Every layer went through the mirror (its access log), after the dead one.
    let mut wanted: Vec<String> = base_layers().iter().map(|l| format!("GET /v2/base/blobs/{l}")).collect();
    wanted.push("GET /v2/base/manifests/1".to_string());
    let log = mirror.log_with(&wanted);
    assert!(log.contains("GET /v2/base/manifests/1"), "{log}");
    for layer in base_layers() {
        assert!(
            log.contains(&format!("GET /v2/base/blobs/{layer}")),
            "layer {layer} not fetched via the mirror:\n{log}"
        );
    }
}

#[test]
fn a_dead_mirror_falls_back_to_the_registry() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:{}\"\n",
            shared_addr(),
            dead_port()
        ),
    )
    .unwrap();
    let root = tmp.path().join("store");
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    ok(&imgfs(&root, &env, &["pull", "-q", &format!("{}/base:1", shared_addr())]));
    assert_ne!(stored_images(&root), "");
}

#[test]
fn daemon_json_registry_mirrors_serve_docker_hub_pulls() {
    let Some(_) = outcome::test_env() else { return };
    // Docker Hub itself is out of reach here; a pull of `busybox-mirror-test` (that is,
    // docker.io/library/…) can only succeed through the mirror, a real docker-registry
    // holding that repository.
    let mirror = Registry::start(tempfile::tempdir().unwrap(), "", "");
    copy_base_image(&format!("{}/library/busybox-mirror-test:1", mirror.addr), None);
    let tmp = tempfile::tempdir().unwrap();
    let daemon = tmp.path().join("daemon.json");
    std::fs::write(&daemon, format!(r#"{{"registry-mirrors": ["http://{}"]}}"#, mirror.addr)).unwrap();
    let root = tmp.path().join("store");
    let env = [("IMGFS_DAEMON_JSON", daemon.to_str().unwrap())];
    ok(&imgfs(&root, &env, &["pull", "-q", "busybox-mirror-test:1"]));
    let log = mirror.log_with(&["GET /v2/library/busybox-mirror-test/manifests/1".to_string()]);
    assert!(log.contains("GET /v2/library/busybox-mirror-test/manifests/1"), "{log}");
    assert!(stored_images(&root).lines().count() == 1);

    // A daemon.json that is not JSON is named in a one-line error.
    std::fs::write(&daemon, "{not json").unwrap();
    let err = fails(&imgfs(&root, &env, &["pull", "-q", "busybox-mirror-test:1"]));
    assert!(err.contains(daemon.to_str().unwrap()), "{err}");
}
