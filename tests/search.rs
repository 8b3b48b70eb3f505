//! `imgfs search`, as `docker search` behaves: Docker Hub's search API and another
//! registry's catalog, docker's columns, truncation, filters, `--limit` and `--format`.
//!
//! Docker Hub cannot be reached from the tests, so its search API is played by a small
//! local HTTP server (`HubStandIn`) that answers `GET /v1/search?q=TERM&n=LIMIT` as the
//! API is documented and docker reads it (`{num_results, query, results: [{name,
//! description, star_count, is_official, is_automated}]}`); imgfs is pointed at it by
//! `IMGFS_SEARCH_INDEX`. `HOST/TERM` searches go to the real test registry
//! (docker-registry, started by scripts/test), whose catalog lists the test images.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::{fails, ok, registry_addr};

/// A stand-in for Docker Hub's search API on 127.0.0.1: answers every search from a
/// fixed list of repositories (those whose name contains `q`, at most `n`), and keeps
/// the request targets it was sent.
struct HubStandIn {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn repositories() -> Vec<Value> {
    json!([
        {"name": "nginx", "description": "Official build of Nginx.", "star_count": 20512, "is_official": true, "is_automated": false},
        {"name": "bitnami/nginx", "description": "Bitnami container image for NGINX, a fast and secure web server\nwith\rnewlines", "star_count": 191, "is_official": false, "is_automated": true},
        {"name": "someone/nginx-proxy", "description": "", "star_count": 3, "is_official": false, "is_automated": false},
        {"name": "ubuntu", "description": "Ubuntu is a Debian-based Linux operating system", "star_count": 17000, "is_official": true, "is_automated": false},
    ])
    .as_array()
    .unwrap()
    .clone()
}

impl HubStandIn {
    fn start() -> HubStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(target.clone());
                let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
                let param = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
                let (status, body) = match (url.path(), param("q"), param("n").and_then(|n| n.parse::<usize>().ok())) {
                    ("/v1/search", Some(q), Some(n)) => {
                        let hits: Vec<Value> =
                            repositories().into_iter().filter(|r| r["name"].as_str().unwrap().contains(&q)).collect();
                        let shown: Vec<Value> = hits.iter().take(n).cloned().collect();
                        ("200 OK", json!({"num_results": hits.len(), "query": q, "results": shown}).to_string())
                    }
                    _ => ("404 Not Found", "{}".to_string()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HubStandIn { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn imgfs(index: &str, args: &[&str]) -> Output {
    let root = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_imgfs"))
        .arg("--root")
        .arg(root.path())
        .args(args)
        .env("IMGFS_SEARCH_INDEX", index)
        .output()
        .unwrap()
}

#[test]
fn a_hub_search_asks_the_search_api_and_prints_dockers_table() {
    let hub = HubStandIn::start();
    let out = ok(&imgfs(&hub.url, &["search", "nginx"]));
    // Docker's columns; a description cut to 45 characters with `…`, newlines as spaces.
    let want = "\
NAME                  DESCRIPTION                                     STARS     OFFICIAL
nginx                 Official build of Nginx.                        20512     [OK]
bitnami/nginx         Bitnami container image for NGINX, a fast an…   191       
someone/nginx-proxy                                                   3         
";
    assert_eq!(out, want);
    // What docker sends: the term and the limit (25 by default).
    assert_eq!(hub.requests(), vec!["/v1/search?q=nginx&n=25".to_string()]);

    let out = ok(&imgfs(&hub.url, &["search", "--no-trunc", "--limit", "2", "nginx"]));
    assert!(
        out.contains("Bitnami container image for NGINX, a fast and secure web server with newlines"),
        "--no-trunc keeps the whole description: {out}"
    );
    assert_eq!(out.lines().count(), 3, "a header and two results: {out}");
    assert_eq!(hub.requests().last().unwrap(), "/v1/search?q=nginx&n=2");
    // `docker.io/` and `library/` name the Hub and its official images.
    ok(&imgfs(&hub.url, &["search", "docker.io/library/ubuntu"]));
    assert_eq!(hub.requests().last().unwrap(), "/v1/search?q=ubuntu&n=25");
}

#[test]
fn search_filters_and_formats_as_docker_does() {
    let hub = HubStandIn::start();
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["search", "--format", "{{.Name}}"];
        all.extend(args);
        ok(&imgfs(&hub.url, &all)).lines().map(String::from).collect()
    };
    assert_eq!(names(&["--filter", "is-official=true", "nginx"]), ["nginx"]);
    assert_eq!(names(&["--filter", "is-official=false", "nginx"]), ["bitnami/nginx", "someone/nginx-proxy"]);
    assert_eq!(names(&["--filter", "stars=100", "nginx"]), ["nginx", "bitnami/nginx"]);
    assert_eq!(names(&["-f", "stars=100", "-f", "is-automated=true", "nginx"]), ["bitnami/nginx"]);

    // `json`: one object per line, every field a string, flags as true/false.
    let out = ok(&imgfs(&hub.url, &["search", "--format", "json", "--limit", "1", "nginx"]));
    let v: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(
        v,
        json!({"Name": "nginx", "Description": "Official build of Nginx.", "StarCount": "20512",
               "IsOfficial": "true", "IsAutomated": "false"})
    );
    // A table template, with printf widths.
    let out = ok(&imgfs(
        &hub.url,
        &["search", "--format", r#"table {{printf "%-8.8s" .Name}}\t{{.StarCount}}"#, "--limit", "2", "nginx"],
    ));
    assert_eq!(out, "NAME       STARS\nnginx      20512\nbitnami/   191\n");
}

#[test]
fn bad_search_input_is_a_one_line_error_before_any_request() {
    let hub = HubStandIn::start();
    let err = fails(&imgfs(&hub.url, &["search", "--limit", "101", "nginx"]));
    assert!(err.contains("limit 101 is outside the range of [1, 100]"), "{err}");
    let err = fails(&imgfs(&hub.url, &["search", "--limit", "0", "nginx"]));
    assert!(err.contains("limit 0 is outside the range of [1, 100]"), "{err}");
    let err = fails(&imgfs(&hub.url, &["search", "-f", "stars=many", "nginx"]));
    assert!(err.contains("invalid filter 'stars=many'"), "{err}");
    let err = fails(&imgfs(&hub.url, &["search", "-f", "is-official=yes", "nginx"]));
    assert!(err.contains("invalid filter 'is-official=yes'"), "{err}");
    let err = fails(&imgfs(&hub.url, &["search", "-f", "color=red", "nginx"]));
    assert!(err.contains("invalid filter 'color'"), "{err}");
    let err = fails(&imgfs(&hub.url, &["search", "--format", "{{.Nmae}}", "nginx"]));
    assert!(err.contains("invalid --format") && err.contains("Nmae"), "{err}");
    assert!(hub.requests().is_empty(), "bad input must not reach the index: {:?}", hub.requests());
    // An index that is not there: the error names it.
    let err = fails(&imgfs("http://127.0.0.1:1", &["search", "nginx"]));
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = fails(&imgfs("ftp://x", &["search", "nginx"]));
    assert!(err.contains("IMGFS_SEARCH_INDEX"), "{err}");
}

#[test]
fn a_registry_search_matches_names_from_its_catalog() {
    let Some(_) = outcome::test_env() else { return };
    let addr = registry_addr();
    // No Hub here: a search of another registry must not ask it.
    let hub = HubStandIn::start();
    let out = ok(&imgfs(&hub.url, &["search", &format!("{addr}/multi")]));
    let want = format!(
        "NAME{pad1}DESCRIPTION   STARS     OFFICIAL\n{addr}/multi{pad2}              0         \n{addr}/multi-docker                 0         \n",
        pad1 = " ".repeat(addr.len() + "/multi-docker".len() + 3 - 4),
        pad2 = " ".repeat("-docker".len() + 3),
    );
    assert_eq!(out, want);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    let out = ok(&imgfs(&hub.url, &["search", "--limit", "1", "--format", "{{.Name}}", &format!("{addr}/multi")]));
    assert_eq!(out, format!("{addr}/multi\n"));
    // Catalog entries have no stars and are not official: filters see that.
    let out = ok(&imgfs(&hub.url, &["search", "-f", "stars=1", "--format", "{{.Name}}", &format!("{addr}/multi")]));
    assert_eq!(out, "");
    let out =
        ok(&imgfs(&hub.url, &["search", "-f", "is-official=false", "--format", "{{.Name}}", &format!("{addr}/app")]));
    assert_eq!(out, format!("{addr}/app\n"));
    let err = fails(&imgfs(&hub.url, &["search", "127.0.0.1:1/x"]));
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
