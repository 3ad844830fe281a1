//! VMDK text descriptors: pure parsing, no I/O.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=fffffffe
//! parentCID=ffffffff
//! createType="monolithicFlat"
//! RW 2097152 FLAT "disk-flat.vmdk" 0
//! ```
//! An extent line is `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; OFFSET is in sectors.

/// A parentCID of all ones means "no parent".
const NO_PARENT_CID: &str = "ffffffff";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) access: String,
    pub(crate) sectors: u64,
    pub(crate) kind: String,
    pub(crate) file: Option<String>,
    pub(crate) offset: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) create_type: Option<String>,
    parent_cid: Option<String>,
    parent_hint: Option<String>,
    pub(crate) extents: Vec<Extent>,
    /// Extent lines that did not parse, kept for the error message.
    pub(crate) bad_lines: Vec<String>,
}

impl Descriptor {
    pub(crate) fn parse(text: &str) -> Self {
        let mut d = Self::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                match parse_extent(line) {
                    Some(e) => d.extents.push(e),
                    None => d.bad_lines.push(line.to_string()),
                }
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = unquote(value.trim()).to_string();
                match key.trim() {
                    "createType" => d.create_type = Some(value),
                    "parentCID" => d.parent_cid = Some(value),
                    "parentFileNameHint" => d.parent_hint = Some(value),
                    _ => {}
                }
            }
        }
        d
    }

    /// The parent's name (or CID) when this is a delta disk.
    pub(crate) fn parent(&self) -> Option<String> {
        let cid = self.parent_cid.as_deref()?;
        if cid.eq_ignore_ascii_case(NO_PARENT_CID) {
            return None;
        }
        Some(
            self.parent_hint
                .clone()
                .unwrap_or_else(|| format!("CID {cid}")),
        )
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn parse_extent(line: &str) -> Option<Extent> {
    let mut words = line.split_whitespace();
    let access = words.next()?.to_string();
    let sectors = words.next()?.parse().ok()?;
    let kind = words.next()?.to_string();
    // The file name is quoted and may contain spaces: take the rest of the line after the type.
    let rest = skip_words(line, 3);
    if rest.is_empty() {
        return Some(Extent {
            access,
            sectors,
            kind,
            file: None,
            offset: 0,
        });
    }
    let (file, tail) = rest.strip_prefix('"')?.split_once('"')?;
    let offset = match tail.trim() {
        "" => 0,
        n => n.parse().ok()?,
    };
    Some(Extent {
        access,
        sectors,
        kind,
        file: Some(file.to_string()),
        offset,
    })
}

fn skip_words(mut s: &str, n: usize) -> &str {
    for _ in 0..n {
        s = s.trim_start();
        s = s.find(char::is_whitespace).map_or("", |i| &s[i..]);
    }
    s.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_descriptor() {
        let d = Descriptor::parse(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n\n# Extent description\n\
             RW 2048 FLAT \"my disk-flat.vmdk\" 0\n\nddb.adapterType = \"ide\"\n",
        );
        assert_eq!(d.create_type.as_deref(), Some("monolithicFlat"));
        assert_eq!(d.parent(), None);
        assert_eq!(
            d.extents,
            vec![Extent {
                access: "RW".into(),
                sectors: 2048,
                kind: "FLAT".into(),
                file: Some("my disk-flat.vmdk".into()),
                offset: 0
            }]
        );
        assert!(d.bad_lines.is_empty());
    }

    #[test]
    fn table_of_extent_lines() {
        type Fields = (&'static str, u64, &'static str, Option<&'static str>, u64);
        let cases: &[(&str, Option<Fields>)] = &[
            (
                "RW 8 SPARSE \"a.vmdk\"",
                Some(("RW", 8, "SPARSE", Some("a.vmdk"), 0)),
            ),
            (
                "RDONLY 16 FLAT \"b.raw\" 128",
                Some(("RDONLY", 16, "FLAT", Some("b.raw"), 128)),
            ),
            ("RW 32 ZERO", Some(("RW", 32, "ZERO", None, 0))),
            ("RW x FLAT \"c\" 0", None),
            ("RW 8 FLAT \"unterminated", None),
            ("RW 8 FLAT \"c\" notanumber", None),
        ];
        for (line, want) in cases {
            let got = parse_extent(line);
            let want = want.map(|(a, s, k, f, o)| Extent {
                access: a.into(),
                sectors: s,
                kind: k.into(),
                file: f.map(Into::into),
                offset: o,
            });
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn delta_disk_names_parent() {
        let d = Descriptor::parse("parentCID=0badcafe\nparentFileNameHint=\"base.vmdk\"\n");
        assert_eq!(d.parent().as_deref(), Some("base.vmdk"));
    }
}
