//! POSIX ACL conversion from the VFS xattr format to ext4's on-disk format.
//!
//! `getxattr(2)` and tar's `SCHILY.xattr.system.posix_acl_*` records carry
//! ACLs as a little-endian header `a_version = 2` followed by 8-byte entries
//! `{ e_tag: u16, e_perm: u16, e_id: u32 }`. ext4 stores them with
//! `a_version = 1` and drops `e_id` from the entries that have no qualifier
//! (`ACL_USER_OBJ`, `ACL_GROUP_OBJ`, `ACL_MASK`, `ACL_OTHER`), as
//! `ext4_acl_to_disk` in the kernel's fs/ext4/acl.c does.

use crate::error::Error;

/// Full xattr name of the access ACL.
pub(crate) const ACCESS_NAME: &[u8] = b"system.posix_acl_access";
/// Full xattr name of the default ACL of a directory.
pub(crate) const DEFAULT_NAME: &[u8] = b"system.posix_acl_default";

const VFS_VERSION: u32 = 2;
const EXT4_VERSION: u32 = 1;
const VFS_HEADER_LEN: usize = 4;
const VFS_ENTRY_LEN: usize = 8;

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Read, write and execute: the only permission bits an ACL entry may hold.
const PERMISSION_BITS: u16 = 0o7;

/// Returns whether `name` is one of the two xattrs that hold a POSIX ACL.
pub(crate) fn is_acl_name(name: &[u8]) -> bool {
    name == ACCESS_NAME || name == DEFAULT_NAME
}

/// Position in the entry order that `posix_acl_valid` in the kernel's
/// fs/posix_acl.c enforces: owner, named users, owning group, named groups,
/// mask, other.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    UserObj,
    Users,
    Groups,
    Other,
    End,
}

/// Converts an ACL in the VFS xattr format to ext4's on-disk format.
///
/// `name` is the xattr's full name and only appears in errors.
///
/// # Errors
/// [`Error::InvalidAcl`] when the value is not version 2, is not a header
/// plus whole 8-byte entries, has an unknown tag or permission bits other
/// than read, write and execute, or breaks the entry order the kernel
/// accepts (exactly one owner, owning group and other entry, named users
/// and groups between them, and a mask whenever a named entry exists).
pub(crate) fn vfs_to_disk(name: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
    let invalid = |reason: String| Error::InvalidAcl {
        name: name.to_vec(),
        reason,
    };

    if value.len() < VFS_HEADER_LEN {
        return Err(invalid(format!(
            "the value is {} bytes, shorter than the 4-byte header",
            value.len()
        )));
    }
    let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    if version != VFS_VERSION {
        return Err(invalid(format!(
            "the header has version {version}; the VFS ACL format is version 2"
        )));
    }
    let entries = &value[VFS_HEADER_LEN..];
    if entries.len() % VFS_ENTRY_LEN != 0 {
        return Err(invalid(format!(
            "the {} bytes after the header are not a whole number of 8-byte entries",
            entries.len()
        )));
    }

    let mut disk = Vec::with_capacity(value.len());
    disk.extend_from_slice(&EXT4_VERSION.to_le_bytes());
    let mut expect = Expect::UserObj;
    let mut has_named_entry = false;
    for (index, entry) in entries.chunks_exact(VFS_ENTRY_LEN).enumerate() {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        let id = &entry[4..8];

        if perm & !PERMISSION_BITS != 0 {
            return Err(invalid(format!(
                "entry {index} has permission bits {perm:#o}; only read, write and execute (0o7) are allowed"
            )));
        }
        let next = match (tag, expect) {
            (ACL_USER_OBJ, Expect::UserObj) => Expect::Users,
            (ACL_USER, Expect::Users) => {
                has_named_entry = true;
                Expect::Users
            }
            (ACL_GROUP_OBJ, Expect::Users) => Expect::Groups,
            (ACL_GROUP, Expect::Groups) => {
                has_named_entry = true;
                Expect::Groups
            }
            (ACL_MASK, Expect::Groups) => Expect::Other,
            (ACL_OTHER, Expect::Other) => Expect::End,
            (ACL_OTHER, Expect::Groups) if !has_named_entry => Expect::End,
            (ACL_OTHER, Expect::Groups) => {
                return Err(invalid(
                    "named user or group entries need a mask entry before the other entry"
                        .to_string(),
                ))
            }
            (ACL_USER_OBJ | ACL_USER | ACL_GROUP_OBJ | ACL_GROUP | ACL_MASK | ACL_OTHER, _) => {
                return Err(invalid(format!(
                    "entry {index} with tag {tag:#x} is out of order; entries must be owner, named users, owning group, named groups, mask, other, each of owner, owning group and other once"
                )))
            }
            _ => return Err(invalid(format!("entry {index} has unknown tag {tag:#x}"))),
        };
        expect = next;

        disk.extend_from_slice(&tag.to_le_bytes());
        disk.extend_from_slice(&perm.to_le_bytes());
        if tag == ACL_USER || tag == ACL_GROUP {
            disk.extend_from_slice(id);
        }
    }
    if expect != Expect::End {
        return Err(invalid(
            "the ACL lacks an owner, owning group or other entry".to_string(),
        ));
    }
    Ok(disk)
}

/// Kind of a named ACL entry, for resolving its name to an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Qualifier {
    User,
    Group,
}

/// Converts the text form of an ACL (`acl_to_text(3)`, as star and GNU tar
/// store it in `SCHILY.acl.*` records) to the VFS xattr format.
///
/// Entries are separated by commas or newlines and read `tag:qualifier:perms`
/// with an optional fourth field holding the numeric id (star's form). Tags
/// may be abbreviated to `u`, `g`, `m` and `o`, and text after `#` is a
/// comment. A qualifier that is not a number goes to `resolve`.
pub(crate) fn text_to_vfs(
    text: &[u8],
    resolve: &dyn Fn(Qualifier, &str) -> Option<u32>,
) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the ACL text is not UTF-8".to_string())?;
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for raw in text.split([',', '\n']) {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let invalid = |reason: &str| format!("invalid ACL entry {entry:?}: {reason}");
        let fields: Vec<&str> = entry.split(':').collect();
        let (tag_text, qualifier, perms, id_field) = match fields[..] {
            [tag, perms] => (tag, "", perms, None),
            [tag, qualifier, perms] => (tag, qualifier, perms, None),
            [tag, qualifier, perms, id] => (tag, qualifier, perms, Some(id)),
            _ => return Err(invalid("expected tag:qualifier:permissions")),
        };
        let named = |kind: Qualifier| -> Result<u32, String> {
            if let Some(id) = id_field {
                return id
                    .parse()
                    .map_err(|_| invalid("the fourth field is not a numeric id"));
            }
            if let Ok(id) = qualifier.parse() {
                return Ok(id);
            }
            resolve(kind, qualifier).ok_or_else(|| {
                invalid(
                    "the name is not in this host's /etc/passwd or /etc/group; store numeric ids",
                )
            })
        };
        let (tag, id) = match (tag_text, qualifier.is_empty()) {
            ("user" | "u", true) => (ACL_USER_OBJ, u32::MAX),
            ("user" | "u", false) => (ACL_USER, named(Qualifier::User)?),
            ("group" | "g", true) => (ACL_GROUP_OBJ, u32::MAX),
            ("group" | "g", false) => (ACL_GROUP, named(Qualifier::Group)?),
            ("mask" | "m", true) => (ACL_MASK, u32::MAX),
            ("other" | "o", true) => (ACL_OTHER, u32::MAX),
            _ => return Err(invalid("expected a user, group, mask or other tag")),
        };
        let mut perm = 0u16;
        for letter in perms.chars() {
            perm |= match letter {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return Err(invalid("permissions may hold only r, w, x and -")),
            };
        }
        entries.push((tag, id, perm));
    }
    if entries.is_empty() {
        return Err("the ACL text has no entries".to_string());
    }
    // The kernel expects entries ordered by tag, and named ones by id.
    entries.sort_unstable();
    let mut vfs = Vec::with_capacity(VFS_HEADER_LEN + entries.len() * VFS_ENTRY_LEN);
    vfs.extend_from_slice(&VFS_VERSION.to_le_bytes());
    for (tag, id, perm) in entries {
        vfs.extend_from_slice(&tag.to_le_bytes());
        vfs.extend_from_slice(&perm.to_le_bytes());
        vfs.extend_from_slice(&id.to_le_bytes());
    }
    Ok(vfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vfs(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut value = VFS_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            value.extend_from_slice(&tag.to_le_bytes());
            value.extend_from_slice(&perm.to_le_bytes());
            value.extend_from_slice(&id.to_le_bytes());
        }
        value
    }

    const UNDEFINED_ID: u32 = u32::MAX;

    #[test]
    fn minimal_acl_uses_short_entries() {
        let value = vfs(&[
            (ACL_USER_OBJ, 7, UNDEFINED_ID),
            (ACL_GROUP_OBJ, 5, UNDEFINED_ID),
            (ACL_OTHER, 4, UNDEFINED_ID),
        ]);
        let disk = vfs_to_disk(ACCESS_NAME, &value).unwrap();
        assert_eq!(
            disk,
            [1, 0, 0, 0, 1, 0, 7, 0, 4, 0, 5, 0, 0x20, 0, 4, 0],
            "header version 1 then three 4-byte entries"
        );
    }

    #[test]
    fn named_entries_keep_their_id() {
        let value = vfs(&[
            (ACL_USER_OBJ, 6, UNDEFINED_ID),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, UNDEFINED_ID),
            (ACL_GROUP, 2, 0x0102_0304),
            (ACL_MASK, 6, UNDEFINED_ID),
            (ACL_OTHER, 0, UNDEFINED_ID),
        ]);
        let disk = vfs_to_disk(DEFAULT_NAME, &value).unwrap();
        let expected: Vec<u8> = [
            &[1, 0, 0, 0][..],
            &[1, 0, 6, 0],
            &[2, 0, 4, 0, 0xe8, 0x03, 0, 0],
            &[4, 0, 4, 0],
            &[8, 0, 2, 0, 4, 3, 2, 1],
            &[0x10, 0, 6, 0],
            &[0x20, 0, 0, 0],
        ]
        .concat();
        assert_eq!(disk, expected);
    }

    #[test]
    fn malformed_acls_rejected() {
        let owner = (ACL_USER_OBJ, 7, UNDEFINED_ID);
        let group = (ACL_GROUP_OBJ, 5, UNDEFINED_ID);
        let other = (ACL_OTHER, 4, UNDEFINED_ID);
        let mut wrong_version = vfs(&[owner, group, other]);
        wrong_version[0] = 1;
        let mut trailing_bytes = vfs(&[owner, group, other]);
        trailing_bytes.push(0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("too short", vec![2, 0]),
            ("wrong version", wrong_version),
            ("partial entry", trailing_bytes),
            ("no entries", vfs(&[])),
            ("missing other", vfs(&[owner, group])),
            ("missing owner", vfs(&[group, other])),
            ("wrong order", vfs(&[group, owner, other])),
            ("owner twice", vfs(&[owner, owner, group, other])),
            (
                "named user without mask",
                vfs(&[owner, (ACL_USER, 7, 5), group, other]),
            ),
            ("unknown tag", vfs(&[owner, (0x40, 7, 0), group, other])),
            ("bad permission", vfs(&[(ACL_USER_OBJ, 8, 0), group, other])),
            ("entry after other", vfs(&[owner, group, other, other])),
        ];
        for (case, value) in cases {
            let err = vfs_to_disk(ACCESS_NAME, &value).unwrap_err();
            assert!(
                matches!(err, Error::InvalidAcl { .. }),
                "{case}: unexpected error {err}"
            );
            assert!(
                err.to_string().contains("system.posix_acl_access"),
                "{case}: the error must name the xattr: {err}"
            );
        }
    }

    #[test]
    fn text_acl_becomes_vfs() {
        let resolve = |kind: Qualifier, name: &str| match (kind, name) {
            (Qualifier::User, "daemon") => Some(1),
            _ => None,
        };
        let text =
            b"user::rw-\nuser:daemon:rw-\nuser:1000:r--,group::r--\nmask::rw-\nother::r--\n\n";

        let vfs = text_to_vfs(text, &resolve).unwrap();

        assert_eq!(
            vfs,
            vfs_bytes(&[
                (ACL_USER_OBJ, 6, u32::MAX),
                (ACL_USER, 6, 1),
                (ACL_USER, 4, 1000),
                (ACL_GROUP_OBJ, 4, u32::MAX),
                (ACL_MASK, 6, u32::MAX),
                (ACL_OTHER, 4, u32::MAX),
            ])
        );
        assert!(vfs_to_disk(ACCESS_NAME, &vfs).is_ok());
    }

    #[test]
    fn text_acl_star_form_and_errors() {
        let none = |_: Qualifier, _: &str| None;
        let star = text_to_vfs(b"u::rwx,u:lisa:r-x:1001,g::r,m::rx,o::-", &none).unwrap();
        assert_eq!(&star[12..20], &vfs_bytes(&[(ACL_USER, 5, 1001)])[4..]);

        for (bad, expected) in [
            ("user:nobody-here:r--", "not in this host"),
            ("user::rwz", "only r, w, x"),
            ("owner::rw-", "tag"),
            ("", "no entries"),
        ] {
            let err = text_to_vfs(bad.as_bytes(), &none).unwrap_err();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }

    fn vfs_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut bytes = VFS_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&perm.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    }
}
