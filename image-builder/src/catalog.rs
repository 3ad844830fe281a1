//! The driver catalog (`drivers/catalog.txt`): which kernel modules the rescue image ships.
//!
//! Format (frozen): `[section]` lines start a group, every other non-blank line is one module name,
//! `#` starts a comment (whole-line or trailing). Names are normalised like the kernel does
//! (`-` → `_`), so `xen-blkfront` and `xen_blkfront` are the same module.

use anyhow::{bail, Result};

/// A parsed catalog: sections in file order, each with its module names (normalised).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    pub sections: Vec<(String, Vec<String>)>,
}

impl Catalog {
    /// Parses catalog text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let Some(name) = name.strip_suffix(']') else {
                    bail!(
                        "parse {origin}:{}: unterminated section header {line:?}",
                        no + 1
                    );
                };
                sections.push((name.trim().to_string(), Vec::new()));
                continue;
            }
            if line.contains(char::is_whitespace) || line.contains('/') {
                bail!(
                    "parse {origin}:{}: expected one module name, got {line:?}",
                    no + 1
                );
            }
            match sections.last_mut() {
                Some((_, mods)) => mods.push(normalise(line)),
                None => bail!(
                    "parse {origin}:{}: module {line:?} before the first [section]",
                    no + 1
                ),
            }
        }
        Ok(Catalog { sections })
    }

    /// All module names, de-duplicated, in catalog order.
    pub fn modules(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for name in self.sections.iter().flat_map(|(_, m)| m) {
            if seen.insert(name.clone()) {
                out.push(name.clone());
            }
        }
        out
    }
}

/// The kernel's module-name normalisation: dashes become underscores.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_dashes() {
        let text =
            "# head\n\n[virtio]   # vm\nvirtio_blk\n virtio-net  # nic\n[fs]\next4\nvirtio_blk\n";
        let c = Catalog::parse(text, "t").unwrap();
        assert_eq!(c.sections.len(), 2);
        assert_eq!(
            c.sections[0],
            (
                "virtio".to_string(),
                vec!["virtio_blk".to_string(), "virtio_net".to_string()]
            )
        );
        assert_eq!(c.modules(), ["virtio_blk", "virtio_net", "ext4"]);
    }

    #[test]
    fn rejects_bad_lines() {
        for (text, want) in [
            ("ext4\n", "before the first [section]"),
            ("[a\next4\n", "unterminated"),
            ("[a]\next4 xfs\n", "one module name"),
        ] {
            let err = Catalog::parse(text, "cat").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn repository_catalog_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../drivers/catalog.txt");
        let c = Catalog::parse(&std::fs::read_to_string(path).unwrap(), path).unwrap();
        let mods = c.modules();
        for m in [
            "virtio_blk",
            "vmw_pvscsi",
            "hv_storvsc",
            "xen_blkfront",
            "megaraid_sas",
            "ntfs3",
            "nls_iso8859_1",
        ] {
            assert!(mods.iter().any(|x| x == m), "{m} missing");
        }
    }
}
