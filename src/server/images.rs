//! Images in requests: where they may come from (`data:` URIs; `file://` paths only under an
//! allowed directory; nothing remote: an edge box fetches nothing by itself), decoding within
//! the image loader's limits, and a cache of their embeddings keyed by a hash of the pixels, so
//! an image sent again (the next turn of a chat about it) is not encoded again.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;

use super::errors::ApiError;
use crate::image::{load_image_bytes, RgbImage};

/// A decoded request image and the hash its embeddings are cached under.
#[derive(Clone, Debug)]
pub struct Image {
    /// 128 bits of keyed SipHash over the size and pixels: a client cannot aim a collision at
    /// keys chosen at random when the process starts.
    pub hash: u128,
    /// The pixels.
    pub rgb: Arc<RgbImage>,
}

/// The bytes an image URL names. `allowed` is the one directory `file://` URLs may read from.
pub fn read_url(url: &str, allowed: Option<&Path>, param: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::invalid_param(param, m).with_code("invalid_image_url");
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("a data: URI needs a comma before its data".into()))?;
        if !meta.ends_with(";base64") {
            return Err(bad(
                "only base64 data: URIs are accepted (data:image/png;base64,...)".into(),
            ));
        }
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("the data: URI is not valid base64: {e}")));
    }
    if let Some(path) = url.strip_prefix("file://") {
        let Some(dir) = allowed else {
            return Err(bad(
                "file:// URLs are refused: this server allows no local directory".into(),
            ));
        };
        let inside = std::fs::canonicalize(path)
            .ok()
            .zip(std::fs::canonicalize(dir).ok())
            .filter(|(p, d)| p.starts_with(d))
            .map(|(p, _)| p);
        // The same answer for a missing file and one outside the directory: a client learns
        // nothing about the rest of the file system.
        let path: PathBuf = inside.ok_or_else(|| {
            bad(format!(
                "{path}: no such file under the server's allowed directory"
            ))
        })?;
        return std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())));
    }
    let scheme = url.split_once(':').map_or(url, |(s, _)| s);
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        return Err(bad(
            "remote image URLs are not fetched (the server reaches nothing by itself): send \
             the image as a data: URI (data:image/png;base64,...)"
                .into(),
        ));
    }
    Err(bad(format!(
        "image URL scheme '{}' is not supported: use a data: URI",
        scheme.chars().take(16).collect::<String>()
    )))
}

/// Decodes `bytes` within the image loader's limits (a decompression bomb is refused from its
/// header, before any pixel buffer exists).
pub fn decode(bytes: &[u8], param: &str) -> Result<Image, ApiError> {
    let rgb = load_image_bytes(bytes, Path::new(param))
        .map_err(|e| ApiError::invalid_param(param, e.to_string()).with_code("invalid_image"))?;
    Ok(Image {
        hash: pixel_hash(&rgb),
        rgb: Arc::new(rgb),
    })
}

fn pixel_hash(img: &RgbImage) -> u128 {
    static KEYS: OnceLock<(std::hash::RandomState, std::hash::RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(Default::default);
    let h = |s: &std::hash::RandomState| s.hash_one((img.width, img.height, &img.data));
    (u128::from(h(a)) << 64) | u128::from(h(b))
}

struct Entry {
    rows: Arc<Vec<f32>>,
    last_use: u64,
}

/// Image embeddings by image hash (and whether only the base image was encoded), least
/// recently used dropped first once they pass a memory budget.
pub struct EmbeddingCache {
    budget: usize,
    used: usize,
    clock: u64,
    map: HashMap<(u128, bool), Entry>,
}

impl EmbeddingCache {
    /// A cache holding at most `budget` bytes of embeddings.
    pub fn new(budget: usize) -> EmbeddingCache {
        EmbeddingCache {
            budget,
            used: 0,
            clock: 0,
            map: HashMap::new(),
        }
    }

    /// The embeddings cached under `key`, marked as just used.
    pub fn get(&mut self, key: (u128, bool)) -> Option<Arc<Vec<f32>>> {
        self.clock += 1;
        let e = self.map.get_mut(&key)?;
        e.last_use = self.clock;
        Some(e.rows.clone())
    }

    /// Keeps `rows` under `key`, dropping the least recently used entries to stay in budget
    /// (rows larger than the whole budget are not kept).
    pub fn insert(&mut self, key: (u128, bool), rows: Arc<Vec<f32>>) {
        let size = rows.len() * 4;
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some((&old, _)) = self.map.iter().min_by_key(|(_, e)| e.last_use) else {
                break;
            };
            if let Some(e) = self.map.remove(&old) {
                self.used -= e.rows.len() * 4;
            }
        }
        self.clock += 1;
        self.used += size;
        if let Some(e) = self.map.insert(
            key,
            Entry {
                rows,
                last_use: self.clock,
            },
        ) {
            self.used -= e.rows.len() * 4;
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_other_than_data_and_allowed_files_are_refused() {
        let e = read_url("https://example.com/a.png", None, "p").unwrap_err();
        assert!(e.message.contains("not fetched"), "{e}");
        assert!(read_url("file:///etc/passwd", None, "p").is_err());
        let dir = std::env::temp_dir();
        let e = read_url("file:///etc/passwd", Some(&dir), "p").unwrap_err();
        assert!(e.message.contains("allowed directory"), "{e}");
        assert!(read_url("data:image/png,abc", None, "p").is_err());
        assert_eq!(
            read_url("data:image/png;base64,YWJj", None, "p").unwrap(),
            b"abc"
        );
        assert!(read_url("data:image/png;base64,@@@", None, "p").is_err());
    }

    #[test]
    fn the_cache_drops_the_least_recently_used_past_its_budget() {
        let mut c = EmbeddingCache::new(3 * 40);
        for k in 0..3u128 {
            c.insert((k, false), Arc::new(vec![0.0; 10]));
        }
        assert!(c.get((0, false)).is_some());
        c.insert((3, false), Arc::new(vec![0.0; 10]));
        assert!(c.get((1, false)).is_none(), "1 was the least recently used");
        assert!(c.get((0, false)).is_some() && c.get((3, false)).is_some());
        assert_eq!(c.used(), 120);
        c.insert((9, false), Arc::new(vec![0.0; 1000]));
        assert!(
            c.get((9, false)).is_none(),
            "larger than the budget: not kept"
        );
    }
}
