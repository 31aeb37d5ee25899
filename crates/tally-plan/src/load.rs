//! Reading a plan from YAML or JSON text or a file, with typed errors.

use std::path::{Path, PathBuf};

use crate::model::Plan;

/// The format of a plan file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (a superset of JSON).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a path's extension names: `.json` is JSON, anything
    /// else YAML.
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Why a plan could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or not a plan (an unknown key, a wrong type).
    #[error("not a valid plan (YAML): {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// The text is not JSON, or not a plan.
    #[error("not a valid plan (JSON): {0}")]
    Json(#[from] serde_json::Error),
    /// The plan names an event twice.
    #[error("event {0:?} is planned twice")]
    DuplicateEvent(String),
    /// An event has no version.
    #[error("event {0:?} has no version")]
    NoVersions(String),
    /// An event's versions are not strictly ascending from 1.
    #[error(
        "event {event:?}: versions must be 1 or more and strictly ascending; {version} is not"
    )]
    VersionOrder {
        /// The event.
        event: String,
        /// The first version out of order.
        version: u32,
    },
    /// A version's properties schema is not a valid JSON Schema (or names
    /// an unknown format, or a `$ref` outside the plan).
    #[error("event {event:?} version {version}: invalid schema at {pointer:?}: {message}")]
    Schema {
        /// The event.
        event: String,
        /// The version.
        version: u32,
        /// Where in the version's `properties` schema (JSON pointer).
        pointer: String,
        /// What is wrong.
        message: String,
    },
}

impl LoadError {
    /// A stable code for the error, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Yaml(_) | Self::Json(_) => "parse",
            Self::DuplicateEvent(_) => "duplicate-event",
            Self::NoVersions(_) => "no-versions",
            Self::VersionOrder { .. } => "version-order",
            Self::Schema { .. } => "schema-invalid",
        }
    }
}

impl Plan {
    /// Parses a plan from text in `format`.
    pub fn parse(text: &str, format: Format) -> Result<Self, LoadError> {
        match format {
            Format::Yaml => Ok(serde_yaml_ng::from_str(text)?),
            Format::Json => Ok(serde_json::from_str(text)?),
        }
    }

    /// Reads a plan file; `.json` files are JSON, others YAML.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Format::of_path(path))
    }
}
