//! Typed reads of a checkpoint's `config.json`: every count, size and divisor is checked for
//! type and range before the converter uses it, and each error names the file, the key (with
//! its section) and the value found.

use std::path::Path;

use serde_json::Value as Json;

use super::ConvertError;

/// The largest width, layer count or vocabulary a GGUF key (u32) can hold.
pub const MAX_U32: usize = u32::MAX as usize;

/// One section of `config.json` (the top level, `text_config` or `vision_config`).
#[derive(Clone, Copy)]
pub struct Section<'a> {
    path: &'a Path,
    name: &'a str,
    v: &'a Json,
}

impl<'a> Section<'a> {
    /// The section `name` of the file at `path` (`""` for the top level).
    pub fn new(path: &'a Path, name: &'a str, v: &'a Json) -> Section<'a> {
        Section { path, name, v }
    }

    /// The dotted key, for messages.
    pub fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// An error about `key` of this section.
    pub fn bad(&self, key: &str, problem: impl Into<String>) -> ConvertError {
        ConvertError::Config {
            path: self.path.to_path_buf(),
            key: self.key(key),
            problem: problem.into(),
        }
    }

    /// The raw value of `key` (`Null` when absent).
    pub fn get(&self, key: &str) -> &'a Json {
        &self.v[key]
    }

    /// A required integer in `lo..=hi`.
    pub fn count(&self, key: &str, lo: usize, hi: usize) -> Result<usize, ConvertError> {
        self.opt_count(key, lo, hi)?
            .ok_or_else(|| self.bad(key, format!("is missing (an integer from {lo} to {hi})")))
    }

    /// An optional integer in `lo..=hi`: None when absent or null.
    pub fn opt_count(
        &self,
        key: &str,
        lo: usize,
        hi: usize,
    ) -> Result<Option<usize>, ConvertError> {
        match self.get(key) {
            Json::Null => Ok(None),
            v => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .filter(|x| (lo..=hi).contains(x))
                .map(Some)
                .ok_or_else(|| {
                    self.bad(
                        key,
                        format!("is {v}; it must be an integer from {lo} to {hi}"),
                    )
                }),
        }
    }

    /// An optional finite number above zero (epsilons, rope bases): None when absent or null.
    pub fn opt_positive(&self, key: &str) -> Result<Option<f64>, ConvertError> {
        match self.get(key) {
            Json::Null => Ok(None),
            v => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0 && *x <= f32::MAX as f64)
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("is {v}; it must be a number above 0"))),
        }
    }

    /// An optional string: None when absent or null.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ConvertError> {
        match self.get(key) {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s)),
            v => Err(self.bad(key, format!("is {v}; it must be a string"))),
        }
    }

    /// An optional boolean: None when absent or null.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConvertError> {
        match self.get(key) {
            Json::Null => Ok(None),
            Json::Bool(b) => Ok(Some(*b)),
            v => Err(self.bad(key, format!("is {v}; it must be true or false"))),
        }
    }

    /// An optional integer of either sign in `lo..=hi`: None when absent or null.
    pub fn opt_int(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ConvertError> {
        match self.get(key) {
            Json::Null => Ok(None),
            v => v
                .as_i64()
                .filter(|x| (lo..=hi).contains(x))
                .map(Some)
                .ok_or_else(|| {
                    self.bad(
                        key,
                        format!("is {v}; it must be an integer from {lo} to {hi}"),
                    )
                }),
        }
    }

    /// A sub-section that must be an object.
    pub fn section(&self, key: &'a str) -> Result<Section<'a>, ConvertError> {
        match self.get(key) {
            v @ Json::Object(_) => Ok(Section {
                path: self.path,
                name: key,
                v,
            }),
            Json::Null => Err(self.bad(key, "is missing (an object)")),
            v => Err(self.bad(key, format!("is {v}; it must be an object"))),
        }
    }
}

/// Heads of width `head_dim` splitting `width`: `heads` must divide it.
pub fn head_dim(
    s: &Section,
    heads_key: &str,
    width: usize,
    heads: usize,
) -> Result<usize, ConvertError> {
    if !width.is_multiple_of(heads) {
        return Err(s.bad(
            heads_key,
            format!("is {heads}, which does not divide the width {width}"),
        ));
    }
    Ok(width / heads)
}
