//! Kubernetes manifests on disk -> typed objects.
//!
//! A manifests directory holds `.yaml`, `.yml` and `.json` files, each with one
//! or more YAML documents (`---` separated), as `kubectl apply -f DIR` takes
//! them. The kinds svcgate serves are decoded into k8s-openapi types: Service
//! (v1), Endpoints (v1), EndpointSlice (discovery.k8s.io/v1) and Pod (v1).
//! Every other kind (a Deployment, a ConfigMap...) is skipped with one log
//! line. Nothing here panics on any input: a document that does not parse is
//! an error naming the file and line, and the file's other documents still load.
//!
//! What a live cluster exports loads as it is: `kubectl get svc,endpointslices,pods
//! -A -o yaml` (or `-o json`) writes one `kind: List` whose `items` are the
//! objects; each item is loaded like a document of its own, named by the line
//! it starts on, and items of other kinds are skipped (one summary log line
//! per List). Typed lists as the API server returns them (`ServiceList`,
//! `EndpointSliceList`... whose items carry no apiVersion or kind) take the
//! list's. Server-set fields (`status`, `metadata.managedFields`,
//! `resourceVersion`, `uid`, `ownerReferences`, annotations) are read and
//! ignored where svcgate has no use for them.
//!
//! YAML crate: `serde_norway`, a maintained fork of `serde_yaml` 0.9 (same API,
//! which dtolnay archived in 2024) over a maintained fork of `unsafe-libyaml`.
//! `serde_yml` was the other candidate, but it carries a RustSec advisory
//! (unsound, unmaintained), and `serde_yaml_ng` is a newer-API fork we have no
//! need for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::LoadError;
pub use crate::origin::Origin;

/// One object svcgate serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `v1/Service`.
    Service(Arc<Service>),
    /// `v1/Endpoints`.
    Endpoints(Arc<Endpoints>),
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice(Arc<EndpointSlice>),
    /// `v1/Pod`.
    Pod(Arc<Pod>),
}

impl Object {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Service(_) => "Service",
            Self::Endpoints(_) => "Endpoints",
            Self::EndpointSlice(_) => "EndpointSlice",
            Self::Pod(_) => "Pod",
        }
    }
}

/// An object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    /// Its file and line.
    pub origin: Origin,
    /// The object.
    pub object: Object,
}

/// A document of a kind svcgate does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub origin: Origin,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`, if any.
    pub name: String,
}

/// What one file held.
#[derive(Debug, Clone, Default)]
pub struct ParsedFile {
    /// The objects svcgate serves, in document order.
    pub objects: Vec<Sourced>,
    /// Documents of other kinds.
    pub skipped: Vec<Skipped>,
    /// Documents that did not load.
    pub errors: Vec<LoadError>,
}

/// True for the file names a manifests directory loads: `.yaml`, `.yml`,
/// `.json`, not hidden (editor swap files, `..data` of ConfigMap volumes).
pub fn is_manifest_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// The manifest files under `path` (a file, or a directory walked
/// recursively), sorted by path: that order is "who came first" for clashes.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let (files, problems) = manifest_files_checked(path)?;
    for (_, p) in &problems {
        tracing::warn!("{p}");
    }
    Ok(files)
}

/// [`manifest_files`], with what the walk met and left out beside the
/// files: directories that lead back into the tree (a symlink loop, walked
/// once), manifest-named entries that cannot be read or resolved (a
/// dangling or looping symlink, a permission error) and manifest-named
/// entries that are not regular files (a FIFO, a socket: never opened, a
/// read of a FIFO would block). `Err` only when `path` itself is unusable.
#[allow(clippy::type_complexity)]
pub fn manifest_files_checked(path: &Path) -> Result<(Vec<PathBuf>, Vec<(PathBuf, LoadError)>), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| LoadError::read(path, e))?;
    if meta.is_file() {
        return Ok((vec![path.to_path_buf()], Vec::new()));
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    // Directories by (device, inode): a symlink back to an ancestor (or to
    // any directory already walked) is not walked again.
    let mut seen = std::collections::HashMap::new();
    seen.insert((meta.dev(), meta.ino()), path.to_path_buf());
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if dir == path => return Err(LoadError::read(&dir, e)),
            Err(e) => {
                problems.push((dir.clone(), LoadError::read(&dir, e)));
                continue;
            }
        };
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    problems.push((dir.clone(), LoadError::read(&dir, e)));
                    continue;
                }
            };
            let p = entry.path();
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            // metadata() follows symlinks (ConfigMap volumes are symlink farms).
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => match seen.entry((m.dev(), m.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let e = LoadError::Loop {
                            path: p.display().to_string(),
                            target: first.get().display().to_string(),
                        };
                        problems.push((p, e));
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(p.clone());
                        stack.push(p);
                    }
                },
                Ok(m) if m.is_file() && is_manifest_file(&p) => out.push(p),
                Ok(_) if is_manifest_file(&p) => {
                    let e = LoadError::read(&p, std::io::Error::other(NOT_REGULAR));
                    problems.push((p, e));
                }
                Err(e) if is_manifest_file(&p) => {
                    let e = LoadError::read(&p, e);
                    problems.push((p, e));
                }
                _ => {}
            }
        }
    }
    out.sort();
    Ok((out, problems))
}

const NOT_REGULAR: &str = "not a regular file (a FIFO, socket or device is never read)";

/// The largest manifest file svcgate reads: 32 MiB. A bigger file is
/// rejected with [`LoadError::TooLarge`] before any of it is read, so a
/// stray dump or a runaway writer cannot make the daemon allocate without
/// bound. (The API server caps one object at 1.5 MiB; 32 MiB holds a
/// `kubectl get -o yaml` export of several thousand Services with their
/// EndpointSlices; split bigger exports.)
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;

/// The bytes of one manifest file: opened without blocking (a FIFO put in
/// place of a file never hangs the reader), only if it is a regular file
/// of at most [`MAX_MANIFEST_BYTES`] (checked on the open file, and again
/// while reading, should it grow).
pub fn read_manifest(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| LoadError::read(path, e))?;
    let meta = f.metadata().map_err(|e| LoadError::read(path, e))?;
    if !meta.is_file() {
        return Err(LoadError::read(path, std::io::Error::other(NOT_REGULAR)));
    }
    let too_large = |size| LoadError::TooLarge { path: path.display().to_string(), size, limit: MAX_MANIFEST_BYTES };
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| LoadError::read(path, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads and parses one file.
pub fn load_file(path: &Path) -> ParsedFile {
    match read_manifest(path) {
        Err(e) => ParsedFile { errors: vec![e], ..ParsedFile::default() },
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_str(path, &text),
            Err(e) => ParsedFile {
                errors: vec![LoadError::Syntax {
                    path: path.display().to_string(),
                    line: 0,
                    message: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
                }],
                ..ParsedFile::default()
            },
        },
    }
}

/// Splits a YAML stream into documents at `---` lines, returning each
/// document's text and its 1-based first line. The `---` line stays in its
/// document (it may carry `--- !tag` or content), so line numbers inside a
/// document map back by adding its first line - 1.
fn split_documents(text: &str) -> Vec<(&str, usize)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_sep = line.starts_with("---")
            && line[3..].chars().next().is_none_or(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r');
        if is_sep && offset > start {
            docs.push((&text[start..offset], start_line));
            start = offset;
            start_line = i + 1;
        }
        offset += line.len();
    }
    if start < text.len() {
        docs.push((&text[start..], start_line));
    }
    docs
}

/// Strips serde_norway's " at line L column C" suffix and returns the message
/// with the line translated to the file.
fn relocate(err: &serde_norway::Error, first_line: usize) -> (String, usize) {
    let msg = err.to_string();
    let line = err.location().map_or(first_line, |l| first_line + l.line().saturating_sub(1));
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    (msg, line)
}

fn str_field<'a>(v: &'a serde_norway::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// Parses a whole file's text. `path` is only used to name things.
pub fn parse_str(path: &Path, text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    let pstr = path.display().to_string();
    for (doc, first_line) in split_documents(text) {
        let value: serde_norway::Value = match serde_norway::from_str(doc) {
            Ok(v) => v,
            Err(e) => {
                let (message, line) = relocate(&e, first_line);
                out.errors.push(LoadError::Syntax { path: pstr.clone(), line, message });
                continue;
            }
        };
        if value.is_null() {
            continue; // empty document, or comments only
        }
        // The document's own first content line, for messages.
        let content_line = first_line
            + doc
                .lines()
                .position(|l| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#') && !t.starts_with("---")
                })
                .unwrap_or(0);
        let origin = Origin::file(path, content_line);
        if !value.is_mapping() {
            out.errors.push(LoadError::Invalid {
                origin,
                kind: "document".into(),
                name: String::new(),
                field: "(top level)".into(),
                reason: "a Kubernetes object must be a mapping with apiVersion, kind and metadata".into(),
            });
            continue;
        }
        let name = value.get("metadata").and_then(|m| str_field(m, "name")).unwrap_or("").to_string();
        let (Some(api_version), Some(kind)) = (str_field(&value, "apiVersion"), str_field(&value, "kind")) else {
            let field = if str_field(&value, "apiVersion").is_none() { "apiVersion" } else { "kind" };
            out.errors.push(LoadError::Invalid {
                origin,
                kind: str_field(&value, "kind").unwrap_or("object").into(),
                name,
                field: field.into(),
                reason: "Required value: every manifest needs apiVersion and kind".into(),
            });
            continue;
        };
        if let Some(item_kind) = list_item_kind(kind, &value) {
            let (api_version, item_kind) = (api_version.to_string(), item_kind.to_string());
            parse_list(&mut out, path, doc, first_line, content_line, &api_version, &item_kind, value);
            continue;
        }
        let decoded = match served_kind(api_version, kind, content_line) {
            Ok(Some(k)) => k.decode_str(doc, first_line),
            Err(e) => Err(e),
            Ok(None) => {
                tracing::info!(file = %pstr, line = content_line, api_version, kind, name = %name,
                    "skipping a kind svcgate does not serve");
                out.skipped.push(Skipped { origin, api_version: api_version.into(), kind: kind.into(), name });
                continue;
            }
        };
        match decoded {
            Ok(object) => out.objects.push(Sourced { origin, object }),
            Err((message, line)) => out.errors.push(LoadError::Decode {
                origin: Origin::file(path, line),
                kind: kind.into(),
                name,
                message,
            }),
        }
    }
    out
}

fn decode<T: serde::de::DeserializeOwned>(doc: &str, first_line: usize) -> Result<T, (String, usize)> {
    serde_norway::from_str(doc).map_err(|e| relocate(&e, first_line))
}

/// A kind svcgate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServedKind {
    Service,
    Endpoints,
    EndpointSlice,
    Pod,
}

impl ServedKind {
    /// Decodes a whole document's text (errors carry the field path and the
    /// file line).
    fn decode_str(self, doc: &str, first_line: usize) -> Result<Object, (String, usize)> {
        Ok(match self {
            Self::Service => Object::Service(Arc::new(decode(doc, first_line)?)),
            Self::Endpoints => Object::Endpoints(Arc::new(decode(doc, first_line)?)),
            Self::EndpointSlice => Object::EndpointSlice(Arc::new(decode(doc, first_line)?)),
            Self::Pod => Object::Pod(Arc::new(decode(doc, first_line)?)),
        })
    }

    /// Decodes one item of a List, already parsed.
    fn decode_value(self, v: serde_norway::Value) -> Result<Object, serde_norway::Error> {
        use serde_norway::from_value;
        Ok(match self {
            Self::Service => Object::Service(Arc::new(from_value(v)?)),
            Self::Endpoints => Object::Endpoints(Arc::new(from_value(v)?)),
            Self::EndpointSlice => Object::EndpointSlice(Arc::new(from_value(v)?)),
            Self::Pod => Object::Pod(Arc::new(from_value(v)?)),
        })
    }
}

/// The kind svcgate decodes for (`apiVersion`, `kind`): `Ok(None)` for a kind
/// it does not serve, an error for a served kind under an apiVersion it does
/// not read.
fn served_kind(api_version: &str, kind: &str, line: usize) -> Result<Option<ServedKind>, (String, usize)> {
    match (api_version, kind) {
        ("v1", "Service") => Ok(Some(ServedKind::Service)),
        ("v1", "Endpoints") => Ok(Some(ServedKind::Endpoints)),
        ("discovery.k8s.io/v1", "EndpointSlice") => Ok(Some(ServedKind::EndpointSlice)),
        ("v1", "Pod") => Ok(Some(ServedKind::Pod)),
        (_, "Service" | "Endpoints" | "Pod" | "EndpointSlice") => Err((
            format!(
                "apiVersion {api_version:?} is not one svcgate reads for {kind} (use {})",
                if kind == "EndpointSlice" { "discovery.k8s.io/v1" } else { "v1" }
            ),
            line,
        )),
        _ => Ok(None),
    }
}

/// When a document is a list of objects, the kind its items have when they
/// do not say (`Some("")` for the generic `List`, which `kubectl get -o yaml`
/// and `-o json` write with every item's apiVersion and kind; `Some("Service")`
/// for a `ServiceList`, as the API server returns it with items that carry
/// neither).
fn list_item_kind<'a>(kind: &'a str, value: &serde_norway::Value) -> Option<&'a str> {
    let items = value.get("items")?;
    if !(items.is_sequence() || items.is_null()) {
        return None;
    }
    match kind {
        "List" => Some(""),
        _ => kind.strip_suffix("List").filter(|k| !k.is_empty()),
    }
}

/// How many items of one List that fail to decode are decoded again from the
/// text for the field's path and line; the others are named by the item's.
const REDECODE_ITEMS: usize = 16;

/// Loads the items of a List document into `out`. Each item is named by its
/// own line when the items can be found in the text (kubectl's YAML and JSON
/// layouts), else by the List's; an item that does not decode is decoded again
/// from the document's text to name the field and its line.
#[allow(clippy::too_many_arguments)]
fn parse_list(
    out: &mut ParsedFile,
    path: &Path,
    doc: &str,
    first_line: usize,
    content_line: usize,
    list_api_version: &str,
    item_kind: &str,
    mut value: serde_norway::Value,
) {
    let items = match value.get_mut("items").map(std::mem::take) {
        Some(serde_norway::Value::Sequence(items)) => items,
        _ => Vec::new(), // `items: null` or absent: an empty List
    };
    let lines = item_lines(doc, items.len());
    let mut skipped_kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut redecoded = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        let line = lines.as_ref().map_or(content_line, |l| first_line + l[i] - 1);
        let origin = Origin::file(path, line);
        let name = item.get("metadata").and_then(|m| str_field(m, "name")).unwrap_or("").to_string();
        if !item.is_mapping() {
            out.errors.push(LoadError::Invalid {
                origin,
                kind: "List".into(),
                name: format!("items[{i}]"),
                field: format!("items[{i}]"),
                reason: "a List's item must be a Kubernetes object (a mapping with apiVersion, kind and metadata)"
                    .into(),
            });
            continue;
        }
        let kind = str_field(&item, "kind").unwrap_or(item_kind).to_string();
        let api_version = str_field(&item, "apiVersion").unwrap_or(list_api_version).to_string();
        if kind.is_empty() {
            out.errors.push(LoadError::Invalid {
                origin,
                kind: "object".into(),
                name,
                field: format!("items[{i}].kind"),
                reason: "Required value: every item of a List needs apiVersion and kind".into(),
            });
            continue;
        }
        if list_item_kind(&kind, &item).is_some() {
            out.errors.push(LoadError::Invalid {
                origin,
                kind,
                name,
                field: format!("items[{i}]"),
                reason: "a List inside a List is not read (kubectl never writes one): list its items directly".into(),
            });
            continue;
        }
        match served_kind(&api_version, &kind, line) {
            Ok(Some(k)) => match k.decode_value(item) {
                Ok(object) => out.objects.push(Sourced { origin, object }),
                Err(e) => {
                    // Each re-decode reads the whole document: only the first
                    // few, so that a List of broken items stays linear.
                    redecoded += 1;
                    let again = if redecoded <= REDECODE_ITEMS { nth_item_error(k, doc, i) } else { None };
                    let (message, line) =
                        again.map(|e| relocate(&e, first_line)).unwrap_or_else(|| (format!("items[{i}]: {e}"), line));
                    out.errors.push(LoadError::Decode { origin: Origin::file(path, line), kind, name, message });
                }
            },
            Ok(None) => {
                tracing::debug!(file = %path.display(), line, api_version = %api_version, kind = %kind, name = %name,
                    "skipping a List item of a kind svcgate does not serve");
                *skipped_kinds.entry(kind.clone()).or_default() += 1;
                out.skipped.push(Skipped { origin, api_version, kind, name });
            }
            Err((message, line)) => {
                out.errors.push(LoadError::Decode { origin: Origin::file(path, line), kind, name, message })
            }
        }
    }
    if !skipped_kinds.is_empty() {
        let kinds: Vec<String> = skipped_kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        tracing::info!(file = %path.display(), line = content_line, kinds = %kinds.join(", "),
            "skipping List items of kinds svcgate does not serve");
    }
}

/// The 1-based lines (in `doc`) where the `count` items of a List start, in
/// the layouts kubectl writes: `- ` entries of a top-level `items:` block
/// sequence (`-o yaml`), or `{` lines of a top-level `"items": [` array
/// (`-o json`). `None` when the layout is another (flow style, one line), as
/// shown by finding a different number of items.
fn item_lines(doc: &str, count: usize) -> Option<Vec<usize>> {
    if count == 0 {
        return Some(Vec::new());
    }
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let lines: Vec<&str> = doc.lines().collect();
    // The first key's indentation: 0 in YAML, the top-level keys' in JSON.
    let key_indent = lines
        .iter()
        .map(|l| l.trim_end())
        .find(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with("---") && t != "{"
        })
        .map(indent)?;
    let items_at = lines.iter().position(|l| {
        let t = l.trim_start();
        indent(l) == key_indent
            && (t.starts_with("items:") || t.starts_with("\"items\":") || t.starts_with("\"items\" :"))
    })?;
    let json = lines[items_at].trim_start().starts_with('"');
    // An item starts at the items' indentation: `-` in YAML; in JSON, any
    // line there but the closing `}` or `]` of the item before.
    let starts = |t: &str| {
        if json {
            !t.starts_with('}') && !t.starts_with(']')
        } else {
            t == "-" || t.starts_with("- ")
        }
    };
    let mut item_indent = None;
    let mut found = Vec::with_capacity(count);
    for (i, l) in lines.iter().enumerate().skip(items_at + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        let want = *item_indent.get_or_insert(ind);
        if ind < want || (ind == want && !json && !starts(t)) {
            break; // the end of the items
        }
        if ind == want && starts(t) {
            found.push(i + 1);
        }
    }
    (found.len() == count).then_some(found)
}

/// Decodes item `n` of a List document again, from its text, for an error
/// with the field path and location (`None` if it decodes this way).
fn nth_item_error(kind: ServedKind, doc: &str, n: usize) -> Option<serde_norway::Error> {
    let r = match kind {
        ServedKind::Service => nth_item::<k8s_openapi::api::core::v1::Service>(doc, n),
        ServedKind::Endpoints => nth_item::<Endpoints>(doc, n),
        ServedKind::EndpointSlice => nth_item::<EndpointSlice>(doc, n),
        ServedKind::Pod => nth_item::<Pod>(doc, n),
    };
    r.err()
}

fn nth_item<T: serde::de::DeserializeOwned>(doc: &str, n: usize) -> Result<(), serde_norway::Error> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::marker::PhantomData;

    struct Doc<T>(usize, PhantomData<T>);
    struct Items<T>(usize, PhantomData<T>);

    impl<'de, T: serde::de::DeserializeOwned> Visitor<'de> for Doc<T> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a List")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "items" {
                    map.next_value_seed(Items::<T>(self.0, PhantomData))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    impl<'de, T: serde::de::DeserializeOwned> DeserializeSeed<'de> for Items<T> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de, T: serde::de::DeserializeOwned> Visitor<'de> for Items<T> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while i < self.0 {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
            seq.next_element::<T>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }
    serde_norway::Deserializer::from_str(doc).deserialize_map(Doc::<T>(n, PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_lines() {
        let t = "a: 1\n---\nb: 2\n--- # c\nc: 3\n----\n";
        let d = split_documents(t);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], ("a: 1\n", 1));
        assert_eq!(d[1], ("---\nb: 2\n", 2));
        assert_eq!(d[2].1, 4);
        assert!(d[2].0.contains("----"));
    }

    #[test]
    fn leading_separator_does_not_make_an_empty_error() {
        let t = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
        let p = parse_str(Path::new("x.yaml"), t);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].origin.line, 2);
    }

    #[test]
    fn syntax_error_names_file_and_line_and_other_documents_load() {
        let t =
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata: [\n";
        let p = parse_str(Path::new("bad.yaml"), t);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.errors.len(), 1);
        let msg = p.errors[0].to_string();
        assert!(msg.starts_with("bad.yaml:"), "{msg}");
        match &p.errors[0] {
            LoadError::Syntax { line, .. } => assert!(*line >= 8, "{line}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn type_error_names_field() {
        let t = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: eighty\n";
        let p = parse_str(Path::new("t.yaml"), t);
        assert_eq!(p.errors.len(), 1);
        let msg = p.errors[0].to_string();
        assert!(msg.contains("t.yaml:7"), "{msg}");
        assert!(msg.contains("Service a"), "{msg}");
        assert!(msg.contains("port"), "{msg}");
    }

    #[test]
    fn list_items_load_with_their_own_lines() {
        let t = "# kubectl get svc,cm -o yaml\napiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n\
                 - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: c\nkind: List\nmetadata:\n  resourceVersion: \"\"\n";
        let p = parse_str(Path::new("l.yaml"), t);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].origin.line, 4);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!((p.skipped[0].kind.as_str(), p.skipped[0].origin.line), ("ConfigMap", 8));
    }

    #[test]
    fn typed_list_items_take_the_list_kind_and_indented_items_are_found() {
        // As the API server returns a ServiceList: items carry no kind.
        let t =
            "apiVersion: v1\nkind: ServiceList\nitems:\n  - metadata:\n      name: a\n  - metadata:\n      name: b\n";
        let p = parse_str(Path::new("l.yaml"), t);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let lines: Vec<usize> = p.objects.iter().map(|o| o.origin.line).collect();
        assert_eq!(lines, [4, 6]);
        assert!(p.objects.iter().all(|o| o.object.kind() == "Service"));
    }

    #[test]
    fn list_items_in_flow_style_fall_back_to_the_list_line() {
        let t = "\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Service\", \
                 \"metadata\": {\"name\": \"a\"}}, {\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}]}\n";
        let p = parse_str(Path::new("l.json"), t);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.objects.len(), 2);
        assert!(p.objects.iter().all(|o| o.origin.line == 2));
    }

    #[test]
    fn list_item_errors_name_item_field_and_line() {
        let t = "{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n            \"apiVersion\": \"v1\",\n            \
                 \"kind\": \"Service\",\n            \"metadata\": {\"name\": \"a\"}\n        },\n        {\n            \
                 \"apiVersion\": \"v1\",\n            \"kind\": \"Service\",\n            \"metadata\": {\"name\": \"b\"},\n            \
                 \"spec\": {\"ports\": [{\"port\": \"eighty\"}]}\n        },\n        [1]\n    ],\n    \"kind\": \"List\"\n}\n";
        let p = parse_str(Path::new("l.json"), t);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].origin.line, 4);
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        let msg = p.errors[0].to_string();
        assert!(msg.starts_with("l.json:13: Service b: items[1].spec.ports[0].port: invalid type"), "{msg}");
        let msg = p.errors[1].to_string();
        assert!(msg.contains("items[2]"), "{msg}");
    }

    #[test]
    fn a_list_of_broken_items_names_each_and_stays_linear() {
        let mut t = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for i in 0..(REDECODE_ITEMS + 4) {
            t.push_str(&format!(
                "- apiVersion: v1\n  kind: Service\n  metadata:\n    name: s{i}\n  spec:\n    ports:\n    - port: x\n"
            ));
        }
        let p = parse_str(Path::new("l.yaml"), &t);
        assert_eq!(p.errors.len(), REDECODE_ITEMS + 4);
        let first = p.errors[0].to_string();
        assert!(first.starts_with("l.yaml:10: Service s0: items[0].spec.ports[0].port: invalid type"), "{first}");
        let last = p.errors[REDECODE_ITEMS + 3].to_string();
        let line = 4 + 7 * (REDECODE_ITEMS + 3);
        assert!(
            last.starts_with(&format!(
                "l.yaml:{line}: Service s{}: items[{}]: ",
                REDECODE_ITEMS + 3,
                REDECODE_ITEMS + 3
            )),
            "{last}"
        );
    }

    #[test]
    fn manifest_file_names() {
        assert!(is_manifest_file(Path::new("a/b.yaml")));
        assert!(is_manifest_file(Path::new("b.yml")));
        assert!(!is_manifest_file(Path::new(".b.yaml.swp")));
        assert!(!is_manifest_file(Path::new(".b.yaml")));
        assert!(!is_manifest_file(Path::new("README.md")));
    }
}
