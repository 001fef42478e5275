//! Output paths: telling when two paths name one file (the same path, a symbolic link or a
//! hard link), and staging several outputs so they replace their targets only together.

use std::path::{Path, PathBuf};

/// Whether `a` and `b` name the same file: the same device and inode when both exist (a hard
/// or symbolic link), else the same canonical path (for outputs not yet written).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    canonical(a) == canonical(b)
}

/// The absolute form of `p` with links resolved as far as the path exists: a file not yet
/// written is its canonical directory plus its name.
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => canonical(dir).join(name),
        _ => abs,
    }
}

/// Outputs written beside their targets under a temporary name and moved into place together
/// by [`Staged::commit`]; dropped uncommitted, they are removed and the targets left as they
/// were.
pub struct Staged {
    pairs: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Staged {
    /// Temporary names beside each of `targets`.
    pub fn new(targets: &[&Path]) -> Staged {
        let pairs = targets
            .iter()
            .map(|t| {
                let mut name = t.file_name().unwrap_or_default().to_os_string();
                name.push(".converting");
                (t.with_file_name(name), t.to_path_buf())
            })
            .collect();
        Staged {
            pairs,
            committed: false,
        }
    }

    /// The temporary path standing for target `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.pairs[i].0
    }

    /// Renames every staged file onto its target.
    pub fn commit(mut self) -> std::io::Result<()> {
        for (tmp, target) in &self.pairs {
            std::fs::rename(tmp, target)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            for (tmp, _) in &self.pairs {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_spellings_of_one_file_are_the_same_file() {
        let dir = std::env::temp_dir().join(format!("gguf-tools-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.gguf");
        std::fs::write(&a, b"x").unwrap();
        let hard = dir.join("hard.gguf");
        let _ = std::fs::remove_file(&hard);
        std::fs::hard_link(&a, &hard).unwrap();
        assert!(same_file(&a, &hard));
        #[cfg(unix)]
        {
            let soft = dir.join("soft.gguf");
            let _ = std::fs::remove_file(&soft);
            std::os::unix::fs::symlink(&a, &soft).unwrap();
            assert!(same_file(&soft, &a));
        }
        assert!(same_file(&a, &dir.join(".").join("a.gguf")));
        // Not yet written: the same name in the same directory.
        let new = dir.join("new.gguf");
        assert!(same_file(&new, &dir.join(".").join("new.gguf")));
        assert!(!same_file(&a, &new));
        std::fs::write(dir.join("b.gguf"), b"x").unwrap();
        assert!(!same_file(&a, &dir.join("b.gguf")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
