//! Whether two names are one file, so nothing a run writes lands on
//! something it reads.
//!
//! A name is not enough: a symbolic link, `..`, a hard link or a
//! case-insensitive file system give one file many names. A file that
//! exists is known by its device and inode; one that does not exist yet is
//! known by its resolved path ([`resolve_path`]), which is all two outputs
//! still to be written can share. (So on a case-insensitive file system two
//! new files named apart only by case, a report `R.json` beside an output
//! `r.json`, are not seen as one: the second is refused as existing, or
//! with `--overwrite` replaces the first.)

use super::resolve_path;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A file's identity on disk (device, inode), where the platform has one.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Inode 0 is what some file systems (FUSE, 9p) report for every
        // file: no identity at all.
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())).filter(|&(_, ino)| ino != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Files a run reads or writes, to test other names against.
#[derive(Clone, Debug, Default)]
pub struct FileSet {
    ids: HashSet<(u64, u64)>,
    paths: HashSet<PathBuf>,
}

impl FileSet {
    /// The set of `paths`, each taken by identity and by resolved name.
    pub fn new<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Self {
        let mut set = FileSet::default();
        for p in paths {
            let p = p.as_ref();
            set.ids.extend(file_id(p));
            set.paths.insert(resolve_path(p));
        }
        set
    }

    /// Whether `path` names one of the files: the same file on disk under
    /// any name, or the same resolved path.
    pub fn contains(&self, path: &Path) -> bool {
        file_id(path).is_some_and(|id| self.ids.contains(&id)) || self.paths.contains(&resolve_path(path))
    }

    /// Whether a file known only by its identity (an open descriptor such
    /// as stdout) is one of them.
    pub fn contains_id(&self, id: (u64, u64)) -> bool {
        self.ids.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_under_other_names_is_found() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.png");
        std::fs::write(&a, b"x").unwrap();
        let set = FileSet::new([&a]);
        assert!(set.contains(&t.path().join("sub/../a.png")));
        #[cfg(unix)]
        {
            let hard = t.path().join("hard.png");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(set.contains(&hard), "a hard link is the same file");
            let soft = t.path().join("soft.png");
            std::os::unix::fs::symlink(&a, &soft).unwrap();
            assert!(set.contains(&soft));
        }
        std::fs::write(t.path().join("b.png"), b"x").unwrap();
        assert!(!set.contains(&t.path().join("b.png")), "same content, another file");
        assert!(!set.contains(&t.path().join("new.png")));
        assert!(FileSet::new([t.path().join("new.png")]).contains(&t.path().join("./new.png")));
    }
}
