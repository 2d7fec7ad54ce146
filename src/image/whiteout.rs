//! OCI whiteouts: the file names in a layer that delete from the layers
//! below instead of adding.

/// Prefix of a whiteout: `.wh.NAME` removes `NAME` from the lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque marker: its directory hides every lower-layer child.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`), which
/// containerd and Docker skip.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Meaning of the last path component of a layer entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// An ordinary name.
    None,
    /// `.wh.NAME`: remove `NAME` from the lower layers.
    Remove(&'a [u8]),
    /// `.wh..wh..opq`: hide all lower-layer children of the directory.
    Opaque,
    /// AUFS metadata, not part of the image.
    AufsMeta,
    /// `.wh.` with nothing after it.
    Empty,
}

/// Classifies the last component of a layer entry's path.
pub fn classify(name: &[u8]) -> Whiteout<'_> {
    if name == OPAQUE_MARKER {
        return Whiteout::Opaque;
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Whiteout::AufsMeta;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Whiteout::None,
        Some([]) => Whiteout::Empty,
        Some(target) => Whiteout::Remove(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        assert_eq!(classify(b"file"), Whiteout::None);
        assert_eq!(classify(b".whfile"), Whiteout::None);
        assert_eq!(classify(b".wh.file"), Whiteout::Remove(b"file"));
        assert_eq!(classify(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(classify(b".wh..wh..opqx"), Whiteout::AufsMeta);
        assert_eq!(classify(b".wh..wh.plnk"), Whiteout::AufsMeta);
        assert_eq!(classify(b".wh."), Whiteout::Empty);
    }
}
