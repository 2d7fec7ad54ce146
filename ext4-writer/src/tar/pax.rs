//! PAX extended header records (POSIX.1-2001 `pax` format): parsing, times
//! with fractions, and the xattr keys written by GNU tar, star and libarchive.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::acl::{self, Qualifier};
use crate::tree::{Timestamp, Xattr};

/// Key prefix of xattrs written by star and GNU tar; the value is stored raw.
const SCHILY_XATTR: &[u8] = b"SCHILY.xattr.";
/// Keys of the text ACLs written by star and by GNU tar's --acls.
const SCHILY_ACL_ACCESS: &str = "SCHILY.acl.access";
const SCHILY_ACL_DEFAULT: &str = "SCHILY.acl.default";
/// Key prefix of xattrs written by libarchive; the name is percent-encoded
/// and the value base64-encoded.
const LIBARCHIVE_XATTR: &[u8] = b"LIBARCHIVE.xattr.";

/// libarchive writes base64 without padding, other writers with it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The records of one PAX header, in archive order. Keys may repeat (GNU
/// sparse format 0.0 lists one offset and size pair per data region).
#[derive(Clone, Debug, Default)]
pub(crate) struct Records {
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Records {
    /// Parses `data`, a sequence of `LENGTH KEY=VALUE\n` records. The length
    /// field counts the whole record, so values may hold newlines and any byte.
    pub(crate) fn parse(data: &[u8]) -> Result<Self, String> {
        let mut records = Vec::new();
        let mut rest = data;
        while !rest.is_empty() && rest.iter().any(|b| *b != 0) {
            let space = rest
                .iter()
                .position(|b| *b == b' ')
                .ok_or("a PAX record has no length field")?;
            let length = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|text| text.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!(
                        "invalid PAX record length {:?}",
                        String::from_utf8_lossy(&rest[..space])
                    )
                })?;
            if length <= space + 1 || length > rest.len() || rest[length - 1] != b'\n' {
                return Err(format!(
                    "PAX record length {length} does not match the record"
                ));
            }
            let record = &rest[space + 1..length - 1];
            let equals = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or("a PAX record has no '='")?;
            records.push((record[..equals].to_vec(), record[equals + 1..].to_vec()));
            rest = &rest[length..];
        }
        Ok(Self { records })
    }

    /// Adds the records of `other` after these, so that its values win.
    pub(crate) fn extend(&mut self, other: &Records) {
        self.records.extend(other.records.iter().cloned());
    }

    /// Removes every record whose key `drop` selects.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.records.retain(|(key, _)| keep(key));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Returns the last value of `key`, because a later record overrides an
    /// earlier one.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.records
            .iter()
            .rev()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Returns every value of `key`, in archive order.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.records
            .iter()
            .filter(move |(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Parses the value of `key` as an unsigned decimal number.
    pub(crate) fn number(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|value| parse_number(key, value))
            .transpose()
    }

    /// Parses the value of `key` as a time in seconds with an optional
    /// fraction.
    pub(crate) fn time(&self, key: &str) -> Result<Option<Timestamp>, String> {
        self.get(key)
            .map(|value| parse_time(key, value))
            .transpose()
    }

    /// Decodes the xattrs of the `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*` records,
    /// sorted by name. When both forms name the same xattr the libarchive
    /// one wins, because its base64 value survives any byte. `SCHILY.acl.*`
    /// text ACLs become POSIX ACL xattrs unless an xattr record sets them.
    pub(crate) fn xattrs(&self) -> Result<Vec<Xattr>, String> {
        let mut xattrs: Vec<Xattr> = Vec::new();
        for (key, value) in &self.records {
            let xattr = if let Some(name) = key.strip_prefix(SCHILY_XATTR) {
                Xattr {
                    name: name.to_vec(),
                    value: value.clone(),
                }
            } else if let Some(name) = key.strip_prefix(LIBARCHIVE_XATTR) {
                let value = BASE64.decode(value).map_err(|err| {
                    format!(
                        "invalid base64 value of PAX record {:?}: {err}",
                        String::from_utf8_lossy(key)
                    )
                })?;
                Xattr {
                    name: percent_decode(name)?,
                    value,
                }
            } else {
                continue;
            };
            if xattr.name.is_empty() {
                return Err(format!(
                    "PAX record {:?} names an empty xattr",
                    String::from_utf8_lossy(key)
                ));
            }
            let libarchive = key.starts_with(LIBARCHIVE_XATTR);
            match xattrs.iter_mut().find(|x| x.name == xattr.name) {
                Some(existing) if libarchive => *existing = xattr,
                Some(_) => {}
                None => xattrs.push(xattr),
            }
        }
        for (key, name) in [
            (SCHILY_ACL_ACCESS, acl::ACCESS_NAME),
            (SCHILY_ACL_DEFAULT, acl::DEFAULT_NAME),
        ] {
            let Some(text) = self.get(key) else { continue };
            if xattrs.iter().any(|x| x.name == name) {
                continue;
            }
            let value = acl::text_to_vfs(text, &host_id)
                .map_err(|err| format!("invalid PAX {key} record: {err}"))?;
            xattrs.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
        xattrs.sort();
        Ok(xattrs)
    }
}

/// Looks a user or group name up in this host's /etc/passwd or /etc/group,
/// as tar does when it extracts an ACL that names them.
fn host_id(kind: Qualifier, name: &str) -> Option<u32> {
    let database = match kind {
        Qualifier::User => "/etc/passwd",
        Qualifier::Group => "/etc/group",
    };
    let text = std::fs::read_to_string(database).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let entry_name = fields.next()?;
        let id = fields.nth(1)?;
        (entry_name == name).then(|| id.parse().ok()).flatten()
    })
}

/// Parses an unsigned decimal PAX value.
pub(crate) fn parse_number(key: &str, value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "invalid PAX {key} {:?}: expected a decimal number",
                String::from_utf8_lossy(value)
            )
        })
}

/// Parses a PAX time: decimal seconds since the epoch, optionally negative,
/// with an optional fraction of which the first 9 digits are kept.
pub(crate) fn parse_time(key: &str, value: &[u8]) -> Result<Timestamp, String> {
    let invalid = || {
        format!(
            "invalid PAX {key} {:?}: expected seconds with an optional fraction",
            String::from_utf8_lossy(value)
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| invalid())?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let seconds: i64 = whole.parse().map_err(|_| invalid())?;

    let mut nanoseconds = 0u32;
    for position in 0..9 {
        let digit = fraction.as_bytes().get(position).map_or(0, |b| b - b'0');
        nanoseconds = nanoseconds * 10 + u32::from(digit);
    }

    if !negative {
        return Ok(Timestamp::new(seconds, nanoseconds));
    }
    // -1.25 is 1.25 s before the epoch: second -2 plus 0.75 s.
    if nanoseconds == 0 {
        Ok(Timestamp::new(-seconds, 0))
    } else {
        Ok(Timestamp::new(-seconds - 1, 1_000_000_000 - nanoseconds))
    }
}

/// Decodes the `%XX` escapes libarchive uses in xattr names.
fn percent_decode(name: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoded = Vec::with_capacity(name.len());
    let mut rest = name;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != b'%' {
            decoded.push(byte);
            rest = tail;
            continue;
        }
        let hex = tail
            .get(..2)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or_else(|| {
                format!(
                    "invalid percent escape in xattr name {:?}",
                    String::from_utf8_lossy(name)
                )
            })?;
        decoded.push(hex);
        rest = &tail[2..];
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let rest = key.len() + value.len() + 3;
        let mut length = rest + 1;
        while length.to_string().len() + rest != length {
            length += 1;
        }
        let mut out = format!("{length} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    #[test]
    fn records_keep_newlines_in_values() {
        let mut data = record("SCHILY.xattr.user.bin", b"a\nb=c\0");
        data.extend(record("path", b"x/y"));
        let records = Records::parse(&data).unwrap();
        assert_eq!(records.get("path"), Some(&b"x/y"[..]));
        let xattrs = records.xattrs().unwrap();
        assert_eq!(xattrs.len(), 1);
        assert_eq!(xattrs[0].value, b"a\nb=c\0");
    }

    #[test]
    fn records_bad_length_rejected() {
        assert!(Records::parse(b"99 path=x\n").is_err());
        assert!(Records::parse(b"abc path=x\n").is_err());
        assert!(Records::parse(b"9 pathx\n").is_err());
    }

    #[test]
    fn libarchive_xattr_decoded() {
        let mut data = record("LIBARCHIVE.xattr.user.a%3Db", b"aGVsbG8");
        data.extend(record("SCHILY.xattr.user.x", b"schily"));
        data.extend(record("LIBARCHIVE.xattr.user.x", b"bGliYXJjaGl2ZQ=="));
        let xattrs = Records::parse(&data).unwrap().xattrs().unwrap();
        assert_eq!(xattrs.len(), 2);
        assert_eq!(xattrs[0].name, b"user.a=b");
        assert_eq!(xattrs[0].value, b"hello");
        assert_eq!(xattrs[1].name, b"user.x");
        assert_eq!(xattrs[1].value, b"libarchive");
    }

    #[test]
    fn times_with_fractions() {
        assert_eq!(
            parse_time("mtime", b"12.5").unwrap(),
            Timestamp::new(12, 500_000_000)
        );
        assert_eq!(
            parse_time("mtime", b"1.1234567891").unwrap(),
            Timestamp::new(1, 123_456_789)
        );
        assert_eq!(
            parse_time("mtime", b"-1.25").unwrap(),
            Timestamp::new(-2, 750_000_000)
        );
        assert_eq!(parse_time("mtime", b"-3").unwrap(), Timestamp::new(-3, 0));
        assert!(parse_time("mtime", b"1e9").is_err());
        assert!(parse_time("mtime", b".5").is_err());
    }
}
