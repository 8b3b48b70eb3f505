//! `imgfs inspect`: a JSON array shaped like `docker image inspect` (4-space indent,
//! docker's keys and order, every key docker always prints, with docker's empty values),
//! plus our own `Layers` list that says which layer blobs are in the store; or, with
//! `--format`, a Go-style template applied to each image.
//! As docker does, the images that were found are printed even when others were not,
//! and the command then fails naming the missing ones.

use super::Context;
use crate::digest::Digest;
use crate::image::ImageConfig;
use crate::layer::ingest::unpacked_size;
use crate::local_source::{self, LocalRef};
use crate::reference::familiar_ref;
use crate::store::db::ImageRecord;
use crate::store::Store;
use crate::template::Template;
use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output with a Go-style template (e.g. `{{.Os}}/{{.Architecture}}`, `{{json .Config}}`)
    #[arg(short, long)]
    pub format: Option<String>,
    /// Images to inspect (reference or ID; `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:REF]` reads the image from there without storing it)
    #[arg(required = true, value_name = "REF|ID")]
    pub images: Vec<String>,
}

/// One image as `docker image inspect` shows it. Field order is docker's.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    id: Digest,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    docker_version: String,
    author: String,
    /// The config's `config` object in docker's shape (`DockerConfig`).
    config: DockerConfig,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    /// Unpacked: the layers' uncompressed sizes (see `ImageRecord::unpacked_size`).
    size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
    /// Not in docker: the layer blobs, and whether each is in the store yet (layers
    /// are fetched lazily, so an image can be listed without all of them).
    layers: Vec<Layer>,
    /// Not in docker: where the image came from (`registry/repository`, or
    /// `oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE` for a local source).
    source: String,
}

/// Docker names the storage driver that holds the image's layers; here it is imgfs's
/// store, and there is no driver data to show.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    data: Option<BTreeMap<String, String>>,
    name: String,
}

/// The image's run configuration with docker's keys in docker's order (moby's
/// `container.Config`), filled in with the zero values docker prints for what the image
/// leaves out (`""`, `false`, `null`); keys docker only prints when set are printed only
/// when the image has them. Keys docker does not know follow, as the image has them.
struct DockerConfig(Vec<(String, Value)>);

/// Docker's keys, and whether docker prints each one when it is unset (`omitempty`).
const CONFIG_KEYS: &[(&str, bool)] = &[
    ("Hostname", true),
    ("Domainname", true),
    ("User", true),
    ("AttachStdin", true),
    ("AttachStdout", true),
    ("AttachStderr", true),
    ("ExposedPorts", false),
    ("Tty", true),
    ("OpenStdin", true),
    ("StdinOnce", true),
    ("Env", true),
    ("Cmd", true),
    ("Healthcheck", false),
    ("ArgsEscaped", false),
    ("Image", true),
    ("Volumes", true),
    ("WorkingDir", true),
    ("Entrypoint", true),
    ("NetworkDisabled", false),
    ("MacAddress", false),
    ("OnBuild", true),
    ("Labels", true),
    ("StopSignal", false),
    ("StopTimeout", false),
    ("Shell", false),
];

impl DockerConfig {
    fn new(raw: Option<&Value>) -> DockerConfig {
        let mut rest = match raw {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let mut fields = Vec::new();
        for &(key, always) in CONFIG_KEYS {
            match rest.remove(key) {
                Some(v) => fields.push((key.to_string(), v)),
                None if always => fields.push((key.to_string(), zero_value(key))),
                None => {}
            }
        }
        fields.extend(rest);
        DockerConfig(fields)
    }
}

/// What docker prints for an unset key: Go's zero value marshalled (nil slices and maps
/// are `null`).
fn zero_value(key: &str) -> Value {
    match key {
        "AttachStdin" | "AttachStdout" | "AttachStderr" | "Tty" | "OpenStdin" | "StdinOnce" => Value::Bool(false),
        "Hostname" | "Domainname" | "User" | "Image" | "WorkingDir" => Value::String(String::new()),
        _ => Value::Null,
    }
}

impl Serialize for DockerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The image as a template sees it. Docker runs templates over its Go structs, where an
/// unset list prints `[]`, an unset map `map[]` and an unset string an empty line; in
/// the JSON they are `null` or left out. So the nulls of those fields become empty
/// lists, maps and strings here, where `<no value>` would otherwise be printed.
fn template_view(image: &Inspected) -> Result<Value> {
    let mut v = serde_json::to_value(image)?;
    let set_empty = |v: &mut Value, path: &[&str], empty: Value| {
        let mut cur = v;
        for key in path {
            let Value::Object(m) = cur else { return };
            cur = m.entry(key.to_string()).or_insert(Value::Null);
        }
        if cur.is_null() {
            *cur = empty;
        }
    };
    for key in ["Env", "Cmd", "Entrypoint", "OnBuild", "Shell"] {
        set_empty(&mut v, &["Config", key], Value::Array(Vec::new()));
    }
    for key in ["ExposedPorts", "Volumes", "Labels"] {
        set_empty(&mut v, &["Config", key], Value::Object(Map::new()));
    }
    for key in ["Hostname", "Domainname", "User", "Image", "WorkingDir", "MacAddress", "StopSignal"] {
        set_empty(&mut v, &["Config", key], Value::String(String::new()));
    }
    set_empty(&mut v, &["GraphDriver", "Data"], Value::Object(Map::new()));
    for key in ["Variant", "OsVersion"] {
        set_empty(&mut v, &[key], Value::String(String::new()));
    }
    Ok(v)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Layer {
    digest: Digest,
    size: u64,
    media_type: String,
    present: bool,
    /// The uncompressed tar's size, once the layer is indexed (null before).
    uncompressed_size: Option<u64>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    // `--format json` is docker's name for the default output.
    let template = match args.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(Template::parse(f).context("invalid --format")?),
    };
    let db = ctx.store.db()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.images {
        let view = match LocalRef::parse(name) {
            Some(local) => local.map_err(anyhow::Error::from).and_then(|l| inspect_local(&ctx.store, &l)),
            None => db.find(name).map_err(anyhow::Error::from).and_then(|(id, _)| {
                let rec = db.images.get(&id).with_context(|| format!("image {id} has no record"))?;
                // Its layers as the name knows them (one image may have several manifests).
                let rec = rec.known_as(name);
                inspect(&ctx.store, &rec, &ctx.store.read_blob(&rec.id)?, db.tags_of(&rec.id))
            }),
        };
        match view {
            Ok(v) => found.push(v),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }

    let mut out = std::io::stdout().lock();
    match &template {
        None => {
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            found.serialize(&mut ser)?;
            out.write_all(b"\n")?;
        }
        Some(t) => {
            for view in &found {
                let value = template_view(view)?;
                let text = t.render(&value).with_context(|| format!("cannot format image {}", view.id))?;
                writeln!(out, "{text}")?;
            }
        }
    }
    out.flush()?;
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// An image as its local source has it (read, checked, not stored); named as a pull
/// would name it.
fn inspect_local(store: &Store, local: &LocalRef) -> Result<Inspected> {
    let image = local_source::resolve(local, None)?;
    let config = image.blobs.iter().find(|(d, _)| d == &image.record.id).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
    inspect(store, &image.record, config, image.names.clone())
}

fn inspect(store: &Store, img: &ImageRecord, bytes: &[u8], tags: Vec<String>) -> Result<Inspected> {
    let raw: Value =
        serde_json::from_slice(bytes).with_context(|| format!("config of image {} is not valid JSON", img.id))?;
    let config: ImageConfig =
        serde_json::from_value(raw.clone()).with_context(|| format!("config of image {} is malformed", img.id))?;
    let mut repo_digests: Vec<String> = Vec::new();
    for r in img.repo_digests.iter().chain(&img.pinned) {
        let r = familiar_ref(r);
        if !repo_digests.contains(&r) {
            repo_digests.push(r);
        }
    }
    Ok(Inspected {
        id: img.id.clone(),
        repo_tags: tags.iter().map(|t| familiar_ref(t)).collect(),
        repo_digests,
        parent: String::new(),
        comment: String::new(),
        created: config.created.clone().unwrap_or_default(),
        docker_version: String::new(),
        author: config.author.clone().unwrap_or_default(),
        config: DockerConfig::new(raw.get("config")),
        architecture: config.architecture.clone(),
        variant: config.variant.clone().filter(|v| !v.is_empty()),
        os: config.os.clone(),
        size: img.unpacked_size(|l| unpacked_size(store, l)),
        graph_driver: GraphDriver { data: None, name: "imgfs".into() },
        root_fs: RootFs { kind: "layers".into(), layers: config.rootfs.diff_ids.clone() },
        // Tag times are not recorded; the time the image entered the store is the
        // closest thing we know.
        metadata: Metadata {
            last_tag_time: jiff::Timestamp::from_second(img.added)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default(),
        },
        layers: img
            .layers
            .iter()
            .map(|l| Layer {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                present: store.has_blob(&l.digest),
                uncompressed_size: unpacked_size(store, l),
            })
            .collect(),
        source: img.source.clone(),
    })
}
