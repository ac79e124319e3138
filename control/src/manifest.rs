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
//! YAML crate: `serde_norway`, a maintained fork of `serde_yaml` 0.9 (same API,
//! which dtolnay archived in 2024) over a maintained fork of `unsafe-libyaml`.
//! `serde_yml` was the other candidate, but it carries a RustSec advisory
//! (unsound, unmaintained), and `serde_yaml_ng` is a newer-API fork we have no
//! need for.

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
    let meta = std::fs::metadata(path).map_err(|e| LoadError::read(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| LoadError::read(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| LoadError::read(&dir, e))?;
            let p = entry.path();
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            // metadata() follows symlinks (ConfigMap volumes are symlink farms).
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() && is_manifest_file(&p) => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and parses one file.
pub fn load_file(path: &Path) -> ParsedFile {
    match std::fs::read(path) {
        Err(e) => ParsedFile { errors: vec![LoadError::read(path, e)], ..ParsedFile::default() },
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
        let decoded = match (api_version, kind) {
            ("v1", "Service") => decode(doc, first_line).map(|o| Object::Service(Arc::new(o))),
            ("v1", "Endpoints") => decode(doc, first_line).map(|o| Object::Endpoints(Arc::new(o))),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                decode(doc, first_line).map(|o| Object::EndpointSlice(Arc::new(o)))
            }
            ("v1", "Pod") => decode(doc, first_line).map(|o| Object::Pod(Arc::new(o))),
            (_, "Service" | "Endpoints" | "Pod" | "EndpointSlice") => Err((
                format!(
                    "apiVersion {api_version:?} is not one svcgate reads for {kind} (use {})",
                    if kind == "EndpointSlice" { "discovery.k8s.io/v1" } else { "v1" }
                ),
                content_line,
            )),
            _ => {
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
    fn manifest_file_names() {
        assert!(is_manifest_file(Path::new("a/b.yaml")));
        assert!(is_manifest_file(Path::new("b.yml")));
        assert!(!is_manifest_file(Path::new(".b.yaml.swp")));
        assert!(!is_manifest_file(Path::new(".b.yaml")));
        assert!(!is_manifest_file(Path::new("README.md")));
    }
}
