//! Where an object came from: a file and line, or the Kubernetes API.
//!
//! Its own module so that both the objects ([`crate::manifest`]) and the
//! errors about them ([`crate::error`]) can name it without importing each
//! other.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where an object came from: a file and the line its document starts on, or
/// the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// A file path as given by the user, or `kube-apiserver`.
    pub path: Arc<str>,
    /// 1-based line of the document's first line; 0 when not from a file.
    pub line: usize,
}

impl Origin {
    /// An origin in a file.
    pub fn file(path: &Path, line: usize) -> Self {
        Self { path: Arc::from(path.display().to_string()), line }
    }

    /// The Kubernetes API server.
    pub fn api() -> Self {
        Self { path: Arc::from("kube-apiserver"), line: 0 }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.path)
        } else {
            write!(f, "{}:{}", self.path, self.line)
        }
    }
}
