//! The image-management commands (`ls`, `inspect`, `tag`, `rm`, `prune`) driven through
//! the real `imgfs` binary against a store in a temp dir. Images are put into the store
//! through the library (config, manifest and layer blobs plus a record), as a pull
//! would leave them, so no registry is needed.

use imgfs::digest::Digest;
use imgfs::image::{Descriptor, OCI_MANIFEST};
use imgfs::reference::Reference;
use imgfs::store::db::ImageRecord;
use imgfs::store::mounts::{process_start_ticks, MountRecord};
use imgfs::store::Store;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// A store in a temp dir and a way to run `imgfs --root` on it.
struct Env {
    dir: tempfile::TempDir,
    store: Store,
}

/// What one run of the binary did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Assert success; the stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Assert a failure with exit code 1 and one `imgfs: error: …` line; that line.
    fn fails(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit code 1: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected a one-line error: {self:#?}");
        assert!(lines[0].starts_with("imgfs: error: "), "{self:#?}");
        lines[0]
    }
}

/// What a test image is made of.
#[derive(Default)]
struct Spec<'a> {
    tags: &'a [&'a str],
    /// RFC 3339 creation time for the config (none: the config has no `created`).
    created: Option<String>,
    labels: &'a [(&'a str, &'a str)],
    layers: &'a [&'a [u8]],
    /// Repositories that pin the image by its manifest digest.
    pinned: &'a [&'a str],
    /// Add a filler layer so that the record's size is exactly this many bytes.
    total_size: Option<u64>,
    /// Makes the config (and so the ID) unique.
    salt: &'a str,
    added: i64,
}

struct TestImage {
    id: Digest,
    manifest: Digest,
    layers: Vec<Digest>,
}

impl TestImage {
    fn short(&self) -> &str {
        self.id.short()
    }
}

fn ago(hours: i64) -> Option<String> {
    Some((Timestamp::now() - SignedDuration::from_hours(hours)).to_string())
}

fn stored_name(reference: &str) -> String {
    let r = Reference::parse(reference).unwrap();
    match (&r.tag, &r.digest) {
        (_, Some(d)) => format!("{}@{d}", r.name()),
        (Some(t), None) => format!("{}:{t}", r.name()),
        (None, None) => unreachable!(),
    }
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Env { dir, store }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
        cmd.arg("--root").arg(self.dir.path()).args(args).env_remove("IMGFS_ROOT");
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run imgfs");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn imgfs(&self, args: &[&str]) -> Out {
        self.run(args, None)
    }

    fn config_bytes(spec: &Spec, layers: &[Vec<u8>]) -> Vec<u8> {
        let labels: serde_json::Map<String, Value> =
            spec.labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "author": "tester",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", format!("SALT={}", spec.salt)],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/app",
                "ExposedPorts": {"80/tcp": {}},
                "Labels": labels,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| Digest::of(l).to_string()).collect::<Vec<_>>(),
            },
        });
        if let Some(c) = &spec.created {
            config["created"] = Value::from(c.as_str());
        }
        serde_json::to_vec(&config).unwrap()
    }

    /// Put an image into the store as a pull would: blobs first, then the record and
    /// its tags (and a RepoDigests entry per repository, as a pull records).
    fn add(&self, spec: Spec) -> TestImage {
        let mut layers: Vec<Vec<u8>> = spec.layers.iter().map(|l| l.to_vec()).collect();
        if let Some(total) = spec.total_size {
            // The config's length does not depend on the filler's content (a digest
            // has a fixed length), so size the filler from a config made with an
            // empty one.
            let mut probe = layers.clone();
            probe.push(Vec::new());
            let fixed =
                Self::config_bytes(&spec, &probe).len() as u64 + layers.iter().map(|l| l.len() as u64).sum::<u64>();
            let filler_len = total.checked_sub(fixed).expect("total_size too small");
            let mut filler = format!("filler {}", spec.salt).into_bytes();
            filler.resize(filler_len as usize, b'.');
            layers.push(filler);
        }
        let config = Self::config_bytes(&spec, &layers);
        let id = Digest::of(&config);
        self.store.put_blob_bytes(&id, &config).unwrap();
        let mut descs = Vec::new();
        for l in &layers {
            let d = Digest::of(l);
            self.store.put_blob_bytes(&d, l).unwrap();
            descs.push(Descriptor {
                media_type: LAYER_TYPE.into(),
                digest: d,
                size: l.len() as u64,
                platform: None,
                annotations: None,
            });
        }
        let config_desc = Descriptor {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: id.clone(),
            size: config.len() as u64,
            platform: None,
            annotations: None,
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": descs,
        }))
        .unwrap();
        let manifest_digest = Digest::of(&manifest);
        self.store.put_blob_bytes(&manifest_digest, &manifest).unwrap();

        let tag_keys: Vec<String> = spec.tags.iter().map(|t| stored_name(t)).collect();
        let mut repos: Vec<String> = tag_keys.iter().map(|k| k.rsplit_once(':').unwrap().0.to_string()).collect();
        repos.extend(spec.pinned.iter().map(|p| Reference::parse(p).unwrap().name()));
        repos.dedup();
        let pinned: Vec<String> =
            spec.pinned.iter().map(|p| format!("{}@{manifest_digest}", Reference::parse(p).unwrap().name())).collect();
        let record = ImageRecord {
            id: id.clone(),
            manifest: manifest_digest.clone(),
            manifest_media_type: OCI_MANIFEST.into(),
            index: None,
            config: config_desc,
            layers: descs.clone(),
            source: repos.first().cloned().unwrap_or_else(|| "docker.io/library/scratch".into()),
            repo_digests: repos.iter().map(|r| format!("{r}@{manifest_digest}")).collect(),
            pinned,
            added: if spec.added != 0 { spec.added } else { Timestamp::now().as_second() },
            other_manifests: Vec::new(),
        };
        self.store
            .update_db(|db| {
                db.images.insert(id.clone(), record);
                for k in &tag_keys {
                    db.set_tag(k, &id);
                }
                Ok::<_, imgfs::store::Error>(())
            })
            .unwrap();
        TestImage { id, manifest: manifest_digest, layers: descs.into_iter().map(|d| d.digest).collect() }
    }

    /// Record a live mount of `image` served by this test process.
    fn mount(&self, image: &TestImage, at: &str) -> u32 {
        let pid = std::process::id();
        let rec = MountRecord {
            pid,
            start_ticks: process_start_ticks(pid).unwrap(),
            mountpoint: PathBuf::from(at),
            image: image.id.clone(),
            reference: "test".into(),
            starting: false,
            device: None,
        };
        self.store.add_mount_record(&rec).unwrap();
        pid
    }

    fn tags(&self) -> Vec<String> {
        self.store.db().unwrap().tags.keys().cloned().collect()
    }

    fn has_image(&self, img: &TestImage) -> bool {
        self.store.db().unwrap().images.contains_key(&img.id)
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

// ---- ls ------------------------------------------------------------------------------

#[test]
fn ls_default_table_is_docker_shaped_and_newest_first() {
    let env = Env::new();
    let old =
        env.add(Spec { tags: &["app:1"], created: ago(72), total_size: Some(1234), salt: "old", ..Default::default() });
    let new = env.add(Spec {
        tags: &["app:2", "127.0.0.1:5000/team/app:latest"],
        created: ago(2),
        total_size: Some(12_300),
        salt: "new",
        ..Default::default()
    });
    let out = env.imgfs(&["ls"]);
    // Docker's tabwriter: columns as wide as their widest cell plus 3, at least 10.
    let row = |repo: &str, tag: &str, id: &str, created: &str, size: &str| {
        format!("{repo:<26}{tag:<10}{id:<15}{created:<14}{size}")
    };
    let want = [
        row("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
        row("127.0.0.1:5000/team/app", "latest", new.short(), "2 hours ago", "12.3kB"),
        row("app", "2", new.short(), "2 hours ago", "12.3kB"),
        row("app", "1", old.short(), "3 days ago", "1.23kB"),
    ];
    assert_eq!(lines(out.ok()), want, "{}", out.stdout);
    // The docker alias and `-a` (accepted, nothing is hidden) give the same.
    assert_eq!(env.imgfs(&["images", "-a"]).ok(), out.stdout);
}

#[test]
fn ls_shows_dangling_and_pinned_images_and_digests() {
    let env = Env::new();
    let tagged = env.add(Spec { tags: &["app:1"], created: ago(1), salt: "t", ..Default::default() });
    let pinned = env.add(Spec { pinned: &["pin"], created: ago(2), salt: "p", ..Default::default() });
    let dangling = env.add(Spec { created: ago(3), salt: "d", ..Default::default() });
    let fmt = "{{.Repository}} {{.Tag}} {{.ID}}";
    let out = env.imgfs(&["ls", "--format", fmt]);
    assert_eq!(
        lines(out.ok()),
        [
            format!("app 1 {}", tagged.short()),
            format!("pin <none> {}", pinned.short()),
            format!("<none> <none> {}", dangling.short()),
        ]
    );
    let out = env.imgfs(&["ls", "--digests"]);
    let rows = lines(out.ok());
    assert!(rows[0].starts_with("REPOSITORY   TAG       DIGEST "), "{}", out.stdout);
    assert!(
        rows[1].contains(&format!("app          1         {}   {}", tagged.manifest, tagged.short())),
        "{}",
        out.stdout
    );
    assert!(rows[2].contains(&format!("pin          <none>    {}", pinned.manifest)), "{}", out.stdout);
    assert!(rows[3].contains("<none>       <none>    <none>"), "{}", out.stdout);
    let out = env.imgfs(&["ls", "--format", "{{.Digest}}"]);
    assert_eq!(lines(out.ok()), [tagged.manifest.to_string(), pinned.manifest.to_string(), "<none>".into()]);
}

#[test]
fn ls_quiet_and_no_trunc() {
    let env = Env::new();
    let a = env.add(Spec { tags: &["a:1", "a:2", "b:1"], created: ago(1), salt: "a", ..Default::default() });
    let b = env.add(Spec { created: ago(2), salt: "b", ..Default::default() });
    assert_eq!(lines(env.imgfs(&["ls", "-q"]).ok()), [a.short(), b.short()]);
    assert_eq!(lines(env.imgfs(&["ls", "-q", "--no-trunc"]).ok()), [a.id.as_str(), b.id.as_str()]);
    let out = env.imgfs(&["ls", "--no-trunc"]);
    assert!(out.ok().contains(a.id.as_str()), "{}", out.stdout);
    // An explicit format wins over -q, as in docker.
    assert_eq!(lines(env.imgfs(&["ls", "-q", "--format", "{{.Tag}}"]).ok()), ["1", "2", "1", "<none>"]);
}

#[test]
fn ls_filters() {
    let env = Env::new();
    let oldest = env.add(Spec {
        tags: &["app:1"],
        created: ago(72),
        labels: &[("team", "a"), ("tier", "web")],
        salt: "oldest",
        ..Default::default()
    });
    let _middle = env.add(Spec {
        tags: &["app:2", "127.0.0.1:5000/team/app:2", "other:x"],
        created: ago(48),
        labels: &[("team", "b"), ("tier", "web")],
        salt: "middle",
        ..Default::default()
    });
    let newest = env.add(Spec { created: ago(24), labels: &[("team", "a")], salt: "newest", ..Default::default() });
    let ls = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["ls", "--format", "{{.Repository}}:{{.Tag}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        env.imgfs(&args).ok().lines().map(String::from).collect()
    };
    let middle_rows = ["127.0.0.1:5000/team/app:2", "app:2", "other:x"];
    assert_eq!(ls(&["dangling=true"]), ["<none>:<none>"]);
    assert_eq!(ls(&["dangling=false"]), [&middle_rows[..], &["app:1"]].concat());
    assert_eq!(ls(&["before=app:2"]), ["app:1"]);
    assert_eq!(ls(&["since=app:1"]), [&["<none>:<none>"][..], &middle_rows].concat());
    assert_eq!(ls(&[&format!("before={}", newest.short())]), [&middle_rows[..], &["app:1"]].concat());
    assert_eq!(ls(&[&format!("since={}", oldest.id), "before=other:x"]), Vec::<String>::new());
    assert_eq!(ls(&["since=app:1", &format!("before={}", newest.id)]), middle_rows);
    // label: all must match.
    assert_eq!(ls(&["label=team=a"]), ["<none>:<none>", "app:1"]);
    assert_eq!(ls(&["label=team=a", "label=tier=web"]), ["app:1"]);
    assert_eq!(ls(&["label=tier"]), [&middle_rows[..], &["app:1"]].concat());
    assert_eq!(ls(&["label=nope"]), Vec::<String>::new());
    // reference: any may match, against the familiar name or name:tag; only the
    // matching names of an image are shown, and `*` does not cross `/`.
    assert_eq!(ls(&["reference=app"]), ["app:2", "app:1"]);
    assert_eq!(ls(&["reference=app*"]), ["app:2", "app:1"]);
    assert_eq!(ls(&["reference=app:[12]"]), ["app:2", "app:1"]);
    assert_eq!(ls(&["reference=*/app:2"]), Vec::<String>::new());
    assert_eq!(ls(&["reference=*/*/app:*"]), ["127.0.0.1:5000/team/app:2"]);
    assert_eq!(ls(&["reference=other", "reference=app:1"]), ["other:x", "app:1"]);
    assert_eq!(ls(&["reference=app:1", "label=team=b"]), Vec::<String>::new());
    assert_eq!(ls(&["reference=*", "dangling=false", "label=team=b"]), ["app:2", "other:x"]);
    // -q honours the filters.
    assert_eq!(lines(env.imgfs(&["ls", "-q", "-f", "dangling=true"]).ok()), [newest.short()]);
}

#[test]
fn ls_bad_filters_and_formats_are_one_line_errors() {
    let env = Env::new();
    env.add(Spec { tags: &["app:1"], salt: "x", ..Default::default() });
    let err = |args: &[&str]| env.imgfs(args).fails().to_string();
    assert!(err(&["ls", "--filter", "color=red"]).contains(r#"invalid filter "color""#));
    assert!(err(&["ls", "--filter", "dangling=maybe"]).contains(r#"invalid dangling filter value "maybe""#));
    assert!(err(&["ls", "--filter", "dangling"]).contains(r#"bad filter "dangling": expected KEY=VALUE"#));
    assert!(err(&["ls", "--filter", "before=nosuch"]).contains("invalid before filter: no such image: nosuch"));
    assert!(err(&["ls", "--filter", "since=Bad:Ref"]).contains("invalid since filter: no such image: Bad:Ref"));
    assert!(err(&["ls", "--filter", "reference=app:["]).contains(r#"invalid reference filter "app:[""#));
    assert!(err(&["ls", "--filter", "label="]).contains("bad label filter"));
    assert!(err(&["ls", "--format", "{{.Nope}}"]).contains(r#"no field "Nope""#));
    assert!(err(&["ls", "--format", "table {{.ID"]).contains("invalid --format"));
    assert!(err(&["ls", "--format", "{{nosuch .ID}}"]).contains("not defined"));
}

#[test]
fn ls_formats() {
    let env = Env::new();
    let img = env.add(Spec {
        tags: &["app:1"],
        created: Some("2024-01-02T03:04:05Z".into()),
        total_size: Some(12_300_000),
        salt: "f",
        ..Default::default()
    });
    let undated = env.add(Spec { tags: &["nodate:1"], salt: "u", added: 1, ..Default::default() });
    let out = env.imgfs(&["ls", "--format", "{{.ID}}|{{.CreatedAt}}|{{.Size}}|{{.CreatedSince}}"]);
    let rows = lines(out.ok());
    assert!(rows[0].starts_with(&format!("{}|2024-01-02 03:04:05 +0000 UTC|12.3MB|", img.short())), "{rows:?}");
    assert!(rows[0].ends_with(" ago"), "{rows:?}");
    assert_eq!(rows[1], format!("{}|N/A|{}|N/A", undated.short(), rows[1].split('|').nth(2).unwrap()));

    // `table`: a header from the placeholders, columns aligned; `\t` is a tab.
    let out = env.imgfs(&["ls", "--format", r"table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}"]);
    assert_eq!(
        lines(out.ok()),
        [
            format!("{:<17}{:<15}SIZE", "REPOSITORY:TAG", "IMAGE ID"),
            format!("{:<17}{:<15}12.3MB", "app:1", img.short()),
            format!("{:<17}{:<15}{}", "nodate:1", undated.short(), rows[1].split('|').nth(2).unwrap()),
        ]
    );
    let out = env.imgfs(&["ls", "--format", "table {{.Digest}}\t{{.CreatedAt}}\t{{.CreatedSince}}\t{{.Tag}}"]);
    let header = lines(out.ok())[0].to_string();
    let cols: Vec<&str> = header.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cols, ["DIGEST", "CREATED AT", "CREATED", "TAG"], "{header}");
    let out = env.imgfs(&["ls", "--format", r"{{.Tag}}\t{{.ID}}"]);
    assert_eq!(lines(out.ok())[0], format!("1\t{}", img.short()));

    // `json`: one object a line with docker's keys.
    let out = env.imgfs(&["ls", "--format", "json"]);
    let first: Value = serde_json::from_str(lines(out.ok())[0]).unwrap();
    assert_eq!(
        first,
        json!({
            "Containers": "N/A",
            "CreatedAt": "2024-01-02 03:04:05 +0000 UTC",
            "CreatedSince": first["CreatedSince"],
            "Digest": img.manifest.to_string(),
            "ID": img.short(),
            "Repository": "app",
            "SharedSize": "N/A",
            "Size": "12.3MB",
            "Tag": "1",
            "UniqueSize": "N/A",
            "VirtualSize": "12.3MB",
        })
    );
    let out = env.imgfs(&["ls", "--no-trunc", "--format", "{{json .}}"]);
    let first: Value = serde_json::from_str(lines(out.ok())[0]).unwrap();
    assert_eq!(first["ID"], img.id.to_string());
    // The default and an explicit `table` are the same.
    assert_eq!(env.imgfs(&["ls", "--format", "table"]).ok(), env.imgfs(&["ls"]).ok());
    // printf with Go's widths and flags.
    let out = env.imgfs(&["ls", "--format", r#"{{printf "%-8s|%6s|%.3s" .Repository .Tag .ID}}"#]);
    assert_eq!(lines(out.ok())[0], format!("app     |     1|{}", &img.short()[..3]));
}

#[test]
fn ls_on_an_empty_store_prints_the_header_only() {
    let env = Env::new();
    assert_eq!(env.imgfs(&["ls"]).ok(), "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n");
    assert_eq!(env.imgfs(&["ls", "-q"]).ok(), "");
    assert_eq!(env.imgfs(&["ls", "--format", "json"]).ok(), "");
}

// ---- inspect -------------------------------------------------------------------------

#[test]
fn inspect_prints_docker_shaped_json() {
    let env = Env::new();
    let img = env.add(Spec {
        tags: &["app:1", "127.0.0.1:5000/app:1"],
        created: Some("2024-01-02T03:04:05Z".into()),
        labels: &[("team", "a"), ("org.example.x", "y")],
        layers: &[b"layer one", b"layer two"],
        salt: "i",
        added: 1_700_000_000,
        ..Default::default()
    });
    // A layer not fetched yet.
    std::fs::remove_file(env.store.blob_path(&img.layers[1])).unwrap();
    let out = env.imgfs(&["inspect", "app:1"]);
    let text = out.ok();
    assert!(text.starts_with("[\n    {\n        \"Id\": \"sha256:"), "{text}");
    let order = [
        "\"Id\"",
        "\"RepoTags\"",
        "\"RepoDigests\"",
        "\"Parent\"",
        "\"Created\"",
        "\"Config\"",
        "\"Hostname\"",
        "\"AttachStdin\"",
        "\"Env\"",
        "\"Entrypoint\"",
        "\"Labels\"",
        "\"Os\"",
        "\"Size\"",
        "\"GraphDriver\"",
        "\"RootFS\"",
        "\"Layers\": [",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "docker's key order: {text}");
    let v: Value = serde_json::from_str(text).unwrap();
    let manifest = img.manifest.to_string();
    assert_eq!(
        v,
        json!([{
            "Id": img.id.to_string(),
            "RepoTags": ["127.0.0.1:5000/app:1", "app:1"],
            "RepoDigests": [format!("app@{manifest}"), format!("127.0.0.1:5000/app@{manifest}")],
            "Parent": "",
            "Comment": "",
            "Created": "2024-01-02T03:04:05Z",
            "DockerVersion": "",
            "Author": "tester",
            // Docker's keys, with docker's zero values for what the image leaves out.
            "Config": {
                "Hostname": "",
                "Domainname": "",
                "User": "",
                "AttachStdin": false,
                "AttachStdout": false,
                "AttachStderr": false,
                "ExposedPorts": {"80/tcp": {}},
                "Tty": false,
                "OpenStdin": false,
                "StdinOnce": false,
                "Env": ["PATH=/usr/bin:/bin", "SALT=i"],
                "Cmd": ["/bin/sh"],
                "Image": "",
                "Volumes": null,
                "WorkingDir": "/app",
                "Entrypoint": null,
                "OnBuild": null,
                "Labels": {"team": "a", "org.example.x": "y"},
            },
            "Architecture": "amd64",
            "Os": "linux",
            // These layers are no tars and were never indexed: they count with their
            // blob sizes.
            "Size": std::fs::metadata(env.store.blob_path(&img.id)).unwrap().len() + 9 + 9,
            "GraphDriver": {"Data": null, "Name": "imgfs"},
            "RootFS": {"Type": "layers", "Layers": [Digest::of(b"layer one").to_string(), Digest::of(b"layer two").to_string()]},
            "Metadata": {"LastTagTime": "2023-11-14T22:13:20Z"},
            "Layers": [
                {"Digest": img.layers[0].to_string(), "Size": 9, "MediaType": LAYER_TYPE, "Present": true, "UncompressedSize": null},
                {"Digest": img.layers[1].to_string(), "Size": 9, "MediaType": LAYER_TYPE, "Present": false, "UncompressedSize": null},
            ],
            // Not in docker either: where the image came from.
            "Source": "docker.io/library/app",
        }])
    );
    assert!(v[0].get("Variant").is_none(), "no variant, no key");
    // By full ID, by ID prefix (with or without sha256:), by digest reference: one image.
    for name in [
        img.id.to_string(),
        img.short().to_string(),
        format!("sha256:{}", &img.id.hex()[..8]),
        format!("app@{manifest}"),
    ] {
        let v: Value = serde_json::from_str(env.imgfs(&["inspect", &name]).ok()).unwrap();
        assert_eq!(v[0]["Id"], img.id.to_string(), "{name}");
    }
}

#[test]
fn inspect_formats() {
    let env = Env::new();
    let img =
        env.add(Spec { tags: &["app:1"], labels: &[("team", "a")], layers: &[b"l1"], salt: "f", ..Default::default() });
    let f = |t: &str| env.imgfs(&["inspect", "--format", t, "app:1"]).ok().to_string();
    assert_eq!(f("{{.Os}}/{{.Architecture}}"), "linux/amd64\n");
    assert_eq!(f("{{.Id}}"), format!("{}\n", img.id));
    assert_eq!(f("{{.RepoTags}}"), "[app:1]\n");
    assert_eq!(f("{{json .Config.Labels}}"), "{\"team\":\"a\"}\n");
    assert_eq!(f("{{.Config.Labels}}"), "map[team:a]\n");
    assert_eq!(f(r#"{{index .Config.Labels "team"}}"#), "a\n");
    assert_eq!(f("{{.Config.Labels.team}}"), "a\n");
    // Docker runs templates over its structs: unset strings print empty, unset lists
    // `[]`, unset maps `map[]`, never `<no value>`.
    assert_eq!(f("{{.Variant}}"), "\n");
    assert_eq!(f("{{.Config.User}}"), "\n");
    assert_eq!(f("{{.Config.Entrypoint}}"), "[]\n");
    assert_eq!(f("{{.Config.OnBuild}}|{{.Config.Volumes}}|{{.GraphDriver.Data}}"), "[]|map[]|map[]\n");
    assert_eq!(f("{{.Config.AttachStdin}} {{.Config.Tty}} {{.GraphDriver.Name}}"), "false false imgfs\n");
    assert_eq!(f("{{len .Config.Entrypoint}}{{range .Config.Entrypoint}}x{{end}}"), "0\n");
    assert_eq!(f("{{.Config.Cmd}} {{.Config.WorkingDir}}"), "[/bin/sh] /app\n");
    assert_eq!(f("{{range .Layers}}{{.Present}} {{.Size}}{{end}}"), "true 2\n");
    assert_eq!(f("{{len .RootFS.Layers}}"), "1\n");
    // One line per image; `--format json` is the default array.
    let out = env.imgfs(&["inspect", "-f", "{{.Os}}", "app:1", img.short()]);
    assert_eq!(out.ok(), "linux\nlinux\n");
    assert_eq!(env.imgfs(&["inspect", "--format", "json", "app:1"]).ok(), env.imgfs(&["inspect", "app:1"]).ok());
    assert!(env.imgfs(&["inspect", "--format", "{{.Os", "app:1"]).fails().contains("invalid --format"));
    assert!(env.imgfs(&["inspect", "--format", "{{.Id.X}}", "app:1"]).fails().contains("can't evaluate field X"));
}

/// `imgfs mount` with no image lists mounts through the same `--format` engine as `ls`:
/// docker's table, `json` lines, templates with printf widths.
#[test]
fn the_mount_list_takes_formats() {
    let env = Env::new();
    let img = env.add(Spec { tags: &["app:1"], layers: &[b"l1"], salt: "m", ..Default::default() });
    let pid = env.mount(&img, "/mnt/some/where");
    let table = env.imgfs(&["mount"]).ok().to_string();
    assert_eq!(
        table,
        format!(
            "IMAGE     IMAGE ID       MOUNTPOINT        PID\ntest      {}   /mnt/some/where   {pid}\n",
            img.short()
        )
    );
    let json_line = env.imgfs(&["mount", "--format", "json"]).ok().to_string();
    let v: Value = serde_json::from_str(json_line.trim_end()).unwrap();
    assert_eq!(
        v,
        json!({"Image": "test", "ID": img.short(), "Mountpoint": "/mnt/some/where", "PID": pid, "Detached": false})
    );
    assert_eq!(
        env.imgfs(&["mount", "--format", r#"{{printf "%-18s|" .Mountpoint}}{{.Image}}"#]).ok(),
        "/mnt/some/where   |test\n"
    );
    assert_eq!(env.imgfs(&["mount", "--format", "table {{.Mountpoint}}"]).ok(), "MOUNTPOINT\n/mnt/some/where\n");
    assert!(env.imgfs(&["mount", "--format", "{{.Nope}}"]).fails().contains("invalid --format"));
    // A format is for the list: with an image to mount it is a usage error.
    assert_eq!(env.imgfs(&["mount", "--format", "json", "app:1", "/tmp"]).code, 2);
}

#[test]
fn inspect_prints_what_it_found_then_fails_naming_the_rest() {
    let env = Env::new();
    let img = env.add(Spec { tags: &["app:1"], salt: "a", ..Default::default() });
    let out = env.imgfs(&["inspect", "nosuch:1", "app:1"]);
    let err = out.fails().to_string();
    assert!(err.ends_with("no such image: nosuch:1"), "{err}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Id"], img.id.to_string());
    let out = env.imgfs(&["inspect", "nosuch"]);
    assert!(out.fails().contains("no such image: nosuch"));
    assert_eq!(out.stdout, "[]\n");
    // A malformed reference is named with the reason.
    let out = env.imgfs(&["inspect", "Bad_Ref"]);
    assert!(out.fails().contains("no such image: Bad_Ref (not an image ID, and invalid reference"), "{out:?}");
}

#[test]
fn ambiguous_id_prefixes_are_refused() {
    let env = Env::new();
    // Find two salts whose configs' IDs share their first 4 hex digits.
    let mut seen = std::collections::HashMap::new();
    let (s1, s2, prefix) = (0..)
        .find_map(|i| {
            let salt = format!("amb{i}");
            let spec = Spec { salt: &salt, ..Default::default() };
            let id = Digest::of(&Env::config_bytes(&spec, &[]));
            let p = id.hex()[..4].to_string();
            seen.insert(p.clone(), salt.clone()).map(|other| (other, salt, p))
        })
        .unwrap();
    let a = env.add(Spec { tags: &["a:1"], salt: &s1, ..Default::default() });
    let b = env.add(Spec { tags: &["b:1"], salt: &s2, ..Default::default() });
    assert_eq!(&a.id.hex()[..4], &b.id.hex()[..4]);
    let before = format!("before={prefix}");
    for cmd in [
        vec!["inspect", &prefix],
        vec!["rm", "-f", &prefix],
        vec!["tag", &prefix, "c:1"],
        vec!["ls", "--filter", &before],
    ] {
        let err = env.imgfs(&cmd).fails().to_string();
        assert!(err.contains(&format!("image ID prefix \"{prefix}\" is ambiguous")), "{cmd:?}: {err}");
    }
    assert!(env.has_image(&a) && env.has_image(&b));
}

// ---- tag -----------------------------------------------------------------------------

#[test]
fn tag_names_images_and_moving_a_tag_can_leave_one_dangling() {
    let env = Env::new();
    let a = env.add(Spec { tags: &["app:1"], created: ago(2), salt: "a", ..Default::default() });
    let b = env.add(Spec { tags: &["other:1"], created: ago(1), salt: "b", ..Default::default() });
    assert_eq!(env.imgfs(&["tag", "app:1", "app:latest"]).ok(), "");
    assert_eq!(env.imgfs(&["tag", a.short(), "127.0.0.1:5000/team/app:v2"]).ok(), "");
    assert_eq!(env.imgfs(&["tag", "app", "app:3"]).ok(), "");
    let tags = env.tags();
    assert_eq!(
        tags,
        [
            "127.0.0.1:5000/team/app:v2",
            "docker.io/library/app:1",
            "docker.io/library/app:3",
            "docker.io/library/app:latest",
            "docker.io/library/other:1",
        ]
    );
    // Move every tag of `a` to `b`: `a` is left dangling.
    for t in ["app:1", "app:3", "app:latest", "127.0.0.1:5000/team/app:v2"] {
        env.imgfs(&["tag", "other:1", t]).ok();
    }
    let out = env.imgfs(&["ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(lines(out.ok()), [a.short()]);
    let out = env.imgfs(&["ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "dangling=false"]);
    assert_eq!(lines(out.ok()), ["127.0.0.1:5000/team/app:v2", "app:1", "app:3", "app:latest", "other:1"]);
    assert_eq!(env.store.db().unwrap().tags_of(&b.id).len(), 5);
}

#[test]
fn tag_refuses_bad_input() {
    let env = Env::new();
    env.add(Spec { tags: &["app:1"], salt: "a", ..Default::default() });
    let d = Digest::of(b"x");
    let err = env.imgfs(&["tag", "app:1", &format!("app@{d}")]).fails().to_string();
    assert!(err.contains("a tag cannot contain a digest"), "{err}");
    let err = env.imgfs(&["tag", "app:1", "Bad:Name"]).fails().to_string();
    assert!(err.contains("invalid reference \"Bad:Name\""), "{err}");
    let err = env.imgfs(&["tag", "nosuch:1", "app:2"]).fails().to_string();
    assert!(err.ends_with("no such image: nosuch:1"), "{err}");
    assert_eq!(env.tags(), ["docker.io/library/app:1"]);
}

// ---- rm ------------------------------------------------------------------------------

#[test]
fn rm_untags_then_deletes_keeping_shared_blobs() {
    let env = Env::new();
    let a = env.add(Spec {
        tags: &["app:1", "app:2"],
        layers: &[b"shared base", b"only in a"],
        salt: "a",
        ..Default::default()
    });
    let b =
        env.add(Spec { tags: &["other:1"], layers: &[b"shared base", b"only in b"], salt: "b", ..Default::default() });
    assert_eq!(env.imgfs(&["rm", "app:1"]).ok(), "Untagged: app:1\n");
    assert!(env.has_image(&a));
    assert!(env.store.has_blob(&a.id));
    let out = env.imgfs(&["rmi", "app:2"]);
    assert_eq!(
        lines(out.ok()),
        [
            "Untagged: app:2".to_string(),
            format!("Untagged: app@{}", a.manifest),
            format!("Deleted: {}", a.id),
            format!("Deleted: {}", a.manifest),
            format!("Deleted: {}", a.layers[1]),
        ]
    );
    assert!(!env.has_image(&a));
    for gone in [&a.id, &a.manifest, &a.layers[1]] {
        assert!(!env.store.has_blob(gone), "{gone} should be deleted");
    }
    assert!(env.store.has_blob(&a.layers[0]), "the layer b shares stays");
    for kept in [&b.id, &b.manifest, &b.layers[0], &b.layers[1]] {
        assert!(env.store.has_blob(kept));
    }
    assert_eq!(env.tags(), ["docker.io/library/other:1"]);
}

#[test]
fn rm_by_id_needs_force_when_several_names_refer_to_it() {
    let env = Env::new();
    let multi = env.add(Spec { tags: &["app:1", "mirror/app:1"], salt: "m", ..Default::default() });
    let same_repo = env.add(Spec { tags: &["x:1", "x:2"], salt: "s", ..Default::default() });
    let single = env.add(Spec { tags: &["one:1"], salt: "o", ..Default::default() });
    for img in [&multi, &same_repo] {
        let err = env.imgfs(&["rm", img.short()]).fails().to_string();
        assert!(
            err.ends_with(&format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.short()
            )),
            "{err}"
        );
        assert!(env.has_image(img));
    }
    assert_eq!(env.tags().len(), 5, "nothing changed");
    let out = env.imgfs(&["rm", "-f", multi.short()]);
    let rows = lines(out.ok());
    assert_eq!(
        rows[..4],
        [
            "Untagged: app:1".to_string(),
            "Untagged: mirror/app:1".to_string(),
            format!("Untagged: app@{}", multi.manifest),
            format!("Untagged: mirror/app@{}", multi.manifest),
        ]
    );
    assert_eq!(rows[4], format!("Deleted: {}", multi.id));
    assert!(!env.has_image(&multi));
    // One tag: no -f needed.
    let out = env.imgfs(&["rm", single.id.as_str()]);
    assert_eq!(
        lines(out.ok())[..3],
        [
            "Untagged: one:1".to_string(),
            format!("Untagged: one@{}", single.manifest),
            format!("Deleted: {}", single.id)
        ]
    );
    assert!(!env.has_image(&single));
    assert!(env.has_image(&same_repo));
}

#[test]
fn rm_goes_on_after_a_bad_name_and_fails_at_the_end() {
    let env = Env::new();
    env.add(Spec { tags: &["app:1", "app:2"], salt: "a", ..Default::default() });
    let out = env.imgfs(&["rm", "nosuch:1", "app:1", "Bad_Ref"]);
    let err = out.fails().to_string();
    assert!(err.contains("no such image: nosuch:1; no such image: Bad_Ref"), "{err}");
    assert_eq!(out.stdout, "Untagged: app:1\n");
    assert_eq!(env.tags(), ["docker.io/library/app:2"]);
}

#[test]
fn rm_removes_digest_references() {
    let env = Env::new();
    let pinned = env.add(Spec { pinned: &["pin"], salt: "p", added: 100, ..Default::default() });
    let both = env.add(Spec { tags: &["app:1"], pinned: &["app"], salt: "b", added: 200, ..Default::default() });
    // The tag goes; the pin keeps the image.
    assert_eq!(env.imgfs(&["rm", "app:1"]).ok(), "Untagged: app:1\n");
    assert!(env.has_image(&both));
    let out = env.imgfs(&["ls", "--format", "{{.Repository}} {{.Tag}}"]);
    assert_eq!(lines(out.ok()), ["app <none>", "pin <none>"]);
    let out = env.imgfs(&["rm", &format!("pin@{}", pinned.manifest)]);
    assert_eq!(lines(out.ok())[..2], [format!("Untagged: pin@{}", pinned.manifest), format!("Deleted: {}", pinned.id)]);
    assert!(!env.has_image(&pinned));
    assert!(!env.store.has_blob(&pinned.manifest));
}

#[test]
fn rm_refuses_an_image_a_live_mount_uses() {
    let env = Env::new();
    let img = env.add(Spec { tags: &["app:1", "app:2"], layers: &[b"busy layer"], salt: "m", ..Default::default() });
    let pid = env.mount(&img, "/mnt/busy");
    let want = |name: &str| format!("image {name} is in use by the mount at /mnt/busy (pid {pid})");
    // Untagging one of several tags leaves the image, so it is allowed.
    assert_eq!(env.imgfs(&["rm", "app:2"]).ok(), "Untagged: app:2\n");
    for args in [vec!["rm", "app:1"], vec!["rm", "-f", "app:1"], vec!["rm", "-f", img.short()]] {
        let err = env.imgfs(&args).fails().to_string();
        assert!(err.ends_with(&want(args.last().unwrap())), "{args:?}: {err}");
    }
    assert_eq!(env.tags(), ["docker.io/library/app:1"], "nothing changed");
    assert!(env.store.has_blob(&img.layers[0]));
    env.store.remove_mount_record(pid);
    let out = env.imgfs(&["rm", "app:1"]);
    assert!(out.ok().contains(&format!("Deleted: {}", img.id)));
    assert!(!env.has_image(&img));
}

// ---- prune ---------------------------------------------------------------------------

/// How docker prints a reclaimed total below 10kB (4 significant digits).
fn small_size(bytes: u64) -> String {
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    assert!(bytes < 10_000, "{bytes}");
    let s = format!("{:.3}", bytes as f64 / 1000.0);
    format!("{}kB", s.trim_end_matches('0').trim_end_matches('.'))
}

fn blob_sizes(env: &Env, blobs: &[&Digest]) -> u64 {
    blobs.iter().map(|d| std::fs::metadata(env.store.blob_path(d)).unwrap().len()).sum()
}

#[test]
fn prune_removes_dangling_images_and_their_unshared_blobs() {
    let env = Env::new();
    let kept = env.add(Spec { tags: &["app:1"], layers: &[b"base"], salt: "k", ..Default::default() });
    let dangling = env.add(Spec { layers: &[b"base", b"own layer"], salt: "d", ..Default::default() });
    let freed = blob_sizes(&env, &[&dangling.id, &dangling.manifest, &dangling.layers[1]]);
    let out = env.imgfs(&["prune", "-f"]);
    assert_eq!(
        out.ok(),
        format!(
            "Deleted Images:\ndeleted: {}\ndeleted: {}\ndeleted: {}\n\nTotal reclaimed space: {}\n",
            dangling.id,
            dangling.manifest,
            dangling.layers[1],
            small_size(freed)
        )
    );
    assert_eq!(out.stderr, "");
    assert!(!env.has_image(&dangling) && env.has_image(&kept));
    assert!(env.store.has_blob(&kept.layers[0]) && !env.store.has_blob(&dangling.layers[1]));
    // Nothing left to prune.
    assert_eq!(env.imgfs(&["prune", "-f"]).ok(), "Total reclaimed space: 0B\n");
}

#[test]
fn prune_all_removes_every_image_but_mounted_ones() {
    let env = Env::new();
    let mounted = env.add(Spec { tags: &["busy:1"], layers: &[b"shared"], salt: "m", ..Default::default() });
    let tagged = env.add(Spec { tags: &["idle:1"], layers: &[b"shared"], salt: "t", ..Default::default() });
    let dangling = env.add(Spec { salt: "d", ..Default::default() });
    let pid = env.mount(&mounted, "/mnt/busy");
    let out = env.imgfs(&["prune", "--all", "--force"]);
    let text = out.ok();
    assert!(text.starts_with("Deleted Images:\n"), "{text}");
    assert!(
        text.contains(&format!("untagged: idle:1\nuntagged: idle@{}\ndeleted: {}\n", tagged.manifest, tagged.id)),
        "{text}"
    );
    assert!(text.contains(&format!("deleted: {}\n", dangling.id)), "{text}");
    assert!(!text.contains("busy"), "{text}");
    assert!(text.contains("\n\nTotal reclaimed space: "), "{text}");
    assert_eq!(
        out.stderr,
        format!("imgfs: skipping image busy:1 ({}): in use by the mount at /mnt/busy (pid {pid})\n", mounted.short())
    );
    assert!(env.has_image(&mounted) && !env.has_image(&tagged) && !env.has_image(&dangling));
    assert!(env.store.has_blob(&mounted.layers[0]));
    env.store.remove_mount_record(pid);
    env.imgfs(&["prune", "-af"]).ok();
    assert!(env.store.db().unwrap().images.is_empty());
    assert_eq!(std::fs::read_dir(env.dir.path().join("blobs/sha256")).unwrap().count(), 0);
}

/// A layer four deleted images shared is deleted once, and listed once.
#[test]
fn prune_lists_a_shared_layer_once() {
    let env = Env::new();
    let images: Vec<TestImage> = ["a", "b", "c", "d"]
        .iter()
        .map(|salt| env.add(Spec { layers: &[b"shared by four", salt.as_bytes()], salt, ..Default::default() }))
        .collect();
    let shared = &images[0].layers[0];
    assert!(images.iter().all(|i| &i.layers[0] == shared));
    let out = env.imgfs(&["prune", "-a", "-f"]);
    let text = out.ok();
    assert_eq!(text.matches(&format!("deleted: {shared}\n")).count(), 1, "{text}");
    for i in &images {
        assert_eq!(text.matches(&format!("deleted: {}\n", i.id)).count(), 1, "{text}");
        assert_eq!(text.matches(&format!("deleted: {}\n", i.layers[1])).count(), 1, "{text}");
    }
    assert!(!env.store.has_blob(shared));
}

#[test]
fn prune_asks_first_and_reads_the_answer_from_stdin() {
    let env = Env::new();
    let img = env.add(Spec { salt: "d", ..Default::default() });
    let prompt = "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ";
    // No stdin at all: no answer, nothing done, and it says so.
    let out = env.imgfs(&["prune"]);
    assert_eq!(out.ok(), "");
    assert!(out.stderr.starts_with(prompt), "{}", out.stderr);
    assert!(out.stderr.contains("nothing pruned: no answer on stdin"), "{}", out.stderr);
    for no in ["n\n", "N\n", "nope\n", "\n"] {
        let out = env.run(&["prune"], Some(no));
        assert_eq!(out.ok(), "");
        assert!(out.stderr.contains("nothing pruned"), "{}", out.stderr);
        assert!(env.has_image(&img));
    }
    let out = env.run(&["prune", "-a"], Some("n\n"));
    assert!(out.stderr.starts_with("WARNING! This will remove all images not used by a mount.\n"), "{}", out.stderr);
    let out = env.run(&["prune"], Some("y\n"));
    assert!(out.ok().starts_with(&format!("Deleted Images:\ndeleted: {}\n", img.id)), "{}", out.stdout);
    assert!(!env.has_image(&img));
    let img = env.add(Spec { salt: "d2", ..Default::default() });
    env.run(&["prune"], Some("YES\n")).ok();
    assert!(!env.has_image(&img));
}

#[test]
fn prune_filters() {
    let env = Env::new();
    let old = env.add(Spec { created: ago(72), labels: &[("team", "a")], salt: "old", ..Default::default() });
    let recent = env.add(Spec { created: ago(1), labels: &[("team", "b")], salt: "recent", ..Default::default() });
    let tagged_old = env.add(Spec {
        tags: &["app:1"],
        created: Some("2020-01-01T00:00:00Z".into()),
        labels: &[("team", "a"), ("keep", "yes")],
        salt: "tagged",
        ..Default::default()
    });
    // Dangling only, and created more than 24 hours ago.
    let out = env.imgfs(&["prune", "-f", "--filter", "until=24h"]);
    assert!(out.ok().contains(&format!("deleted: {}", old.id)), "{}", out.stdout);
    assert!(env.has_image(&recent) && env.has_image(&tagged_old));
    // A timestamp: nothing dangling is older than 2021.
    let out = env.imgfs(&["prune", "-f", "--filter", "until=2021-01-01T00:00:00Z"]);
    assert_eq!(out.ok(), "Total reclaimed space: 0B\n");
    let out = env.imgfs(&["prune", "-af", "--filter", "until=1609459200"]);
    assert!(out.ok().contains("untagged: app:1"), "{}", out.stdout);
    assert!(!env.has_image(&tagged_old) && env.has_image(&recent));

    let a = env.add(Spec { tags: &["a:1"], labels: &[("team", "a")], salt: "a", ..Default::default() });
    let a_keep =
        env.add(Spec { tags: &["k:1"], labels: &[("team", "a"), ("keep", "yes")], salt: "ak", ..Default::default() });
    // label: must match; label!: spared when it matches.
    let out = env.imgfs(&["prune", "-af", "--filter", "label=team=a", "--filter", "label!=keep"]);
    assert!(out.ok().contains(&format!("deleted: {}", a.id)), "{}", out.stdout);
    assert!(!env.has_image(&a) && env.has_image(&a_keep) && env.has_image(&recent));
    let out = env.imgfs(&["prune", "-af", "--filter", "label=team"]);
    assert!(out.ok().contains(&format!("deleted: {}", recent.id)), "{}", out.stdout);
    assert!(!env.has_image(&recent) && !env.has_image(&a_keep));
}

#[test]
fn prune_refuses_bad_filters_before_asking() {
    let env = Env::new();
    for (f, want) in [
        ("dangling=true", r#"invalid filter "dangling""#),
        ("until=yesterday", r#"invalid until filter "yesterday""#),
        ("until", r#"bad filter "until": expected KEY=VALUE"#),
        ("label!=", "bad label filter"),
    ] {
        let err = env.imgfs(&["prune", "--filter", f]).fails().to_string();
        assert!(err.contains(want), "{f}: {err}");
    }
}

#[test]
fn prune_sweeps_unreferenced_blobs_and_stale_temp_files() {
    let env = Env::new();
    let img = env.add(Spec { tags: &["app:1"], salt: "a", ..Default::default() });
    let stray = b"0123456789";
    env.store.put_blob_bytes(&Digest::of(stray), stray).unwrap();
    // A name that says no owner (a temp file of a dead owner is gone before prune runs:
    // every command removes those when it opens the store).
    std::fs::write(env.dir.path().join("tmp/left-by-an-older-imgfs"), b"12345").unwrap();
    assert_eq!(env.imgfs(&["prune", "-f"]).ok(), "Total reclaimed space: 15B\n");
    assert!(!env.store.has_blob(&Digest::of(stray)));
    assert_eq!(std::fs::read_dir(env.dir.path().join("tmp")).unwrap().count(), 0);
    assert!(env.has_image(&img) && env.store.has_blob(&img.id));
}

/// Whoever reads the output stops before it is written (`imgfs ls | head -0`): the
/// command ends quietly with status 0, as other Unix tools do, never with a panic or
/// an error about the pipe.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let env = Env::new();
    for i in 0..50 {
        let tag = format!("app:{i}");
        env.add(Spec { tags: &[tag.as_str()], created: ago(1), salt: &tag, ..Default::default() });
    }
    for args in [&["ls"][..], &["ls", "--format", "json"], &["inspect", "app:1"], &["mount"]] {
        let (read_end, write_end) = std::io::pipe().unwrap();
        drop(read_end);
        let out = Command::new(env!("CARGO_BIN_EXE_imgfs"))
            .arg("--root")
            .arg(env.dir.path())
            .args(args)
            .env_remove("IMGFS_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "imgfs {args:?} into a closed pipe: {stderr}");
        assert!(stderr.is_empty(), "imgfs {args:?} into a closed pipe said: {stderr}");
    }
}

#[test]
fn ls_positional_repo_and_tag_filter_like_docker_images() {
    let env = Env::new();
    let one = env.add(Spec {
        tags: &["app:1", "127.0.0.1:5000/app:1"],
        created: ago(72),
        labels: &[("team", "a")],
        salt: "one",
        ..Default::default()
    });
    let _two = env.add(Spec {
        tags: &["app:2", "user/app:2"],
        created: ago(48),
        labels: &[("team", "b")],
        salt: "two",
        ..Default::default()
    });
    let _pinned = env.add(Spec { pinned: &["app"], created: ago(24), salt: "pinned", ..Default::default() });
    let ls = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["ls", "--format", "{{.Repository}}:{{.Tag}}"];
        all.extend(args);
        env.imgfs(&all).ok().lines().map(String::from).collect()
    };
    // Without a tag, every tag of the repository and its untagged digests; the name
    // is normalised as references are, so the long Docker Hub form is the same repo.
    assert_eq!(ls(&["app"]), ["app:<none>", "app:2", "app:1"]);
    assert_eq!(ls(&["docker.io/library/app"]), ["app:<none>", "app:2", "app:1"]);
    assert_eq!(ls(&["user/app"]), ["user/app:2"]);
    assert_eq!(ls(&["127.0.0.1:5000/app"]), ["127.0.0.1:5000/app:1"]);
    // With a tag, that tag only; the tag may be a glob, as docker's reference filter.
    assert_eq!(ls(&["app:1"]), ["app:1"]);
    assert_eq!(ls(&["index.docker.io/library/app:2"]), ["app:2"]);
    assert_eq!(ls(&["app:[12]"]), ["app:2", "app:1"]);
    assert_eq!(ls(&["app:9"]), Vec::<String>::new());
    assert_eq!(ls(&["nothing"]), Vec::<String>::new());
    // `images` is the same command, and the other flags apply to the match.
    let images = env.imgfs(&["images", "-q", "127.0.0.1:5000/app:1"]);
    assert_eq!(lines(images.ok()), [one.short()]);
    // The positional and --filter must both hold.
    assert_eq!(ls(&["--filter", "label=team=a", "app"]), ["app:1"]);
    assert_eq!(ls(&["--filter", "label=team=b", "app:1"]), Vec::<String>::new());
    assert_eq!(ls(&["--filter", "reference=*/app", "app"]), Vec::<String>::new());
    // A name that is no reference is a one-line error naming it.
    let err = env.imgfs(&["ls", "App"]).fails().to_string();
    assert!(err.contains("\"App\""), "{err}");
}
