//! A pure parser for Windows driver INF files: just enough to learn what a driver package
//! installs — its service name, binary, class GUID and the PCI hardware IDs it matches.
//!
//! INF syntax: `[section]` headers; `key = value, value, ...` or bare value lines; `;`
//! starts a comment outside quotes; a trailing `\` continues a line; `%name%` refers to
//! the `[Strings]` section. Files are UTF-16LE with a BOM or ASCII/UTF-8.

use std::collections::BTreeMap;

/// An INF that cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("parse INF: {0}")]
pub struct InfError(pub String);

/// One entry line of a section: an optional key and its comma-separated values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Option<String>,
    pub values: Vec<String>,
}

/// A parsed INF: sections by lower-cased name, in file order within each section.
#[derive(Debug, Clone, Default)]
pub struct Inf {
    pub sections: BTreeMap<String, Vec<Entry>>,
}

/// What a driver package installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfDriver {
    pub service: String,
    /// File name of the driver binary (ServiceBinary without its directory).
    pub binary: String,
    pub class: Option<String>,
    pub class_guid: Option<String>,
    /// Hardware IDs matched by the models sections, as written (e.g.
    /// `PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00`).
    pub hardware_ids: Vec<String>,
    pub start_type: Option<u32>,
    pub load_order_group: Option<String>,
}

/// Decodes INF bytes: UTF-16LE with BOM (or BOM-less UTF-16LE), UTF-8 with or without BOM,
/// else Latin-1.
pub fn decode(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8]| {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest);
    }
    if bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0 {
        return utf16(bytes);
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Removes a `;` comment outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Splits on `sep` outside double quotes, trims, and removes the quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur).trim().to_owned()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_owned());
    out
}

/// Parses INF text into sections. `%strkey%` tokens are left as they are; use
/// [`Inf::expand`].
pub fn parse(text: &str) -> Result<Inf, InfError> {
    let mut inf = Inf::default();
    let mut current: Option<String> = None;
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let end = line
                .find(']')
                .ok_or_else(|| InfError(format!("line {}: unclosed section header", n + 1)))?;
            let name = line[1..end].trim().to_lowercase();
            inf.sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(sec) = &current else {
            return Err(InfError(format!(
                "line {}: entry before any section",
                n + 1
            )));
        };
        let (key, rest) = match split_key(line) {
            Some((k, v)) => (Some(k), v),
            None => (None, line),
        };
        let entry = Entry {
            key,
            values: split_outside_quotes(rest, ','),
        };
        inf.sections.entry(sec.clone()).or_default().push(entry);
    }
    Ok(inf)
}

/// `key = value` split at the first `=` outside quotes.
fn split_key(line: &str) -> Option<(String, &str)> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '=' if !quoted => {
                let key = line[..i].trim().trim_matches('"').to_owned();
                return Some((key, &line[i + 1..]));
            }
            _ => {}
        }
    }
    None
}

fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Inf {
    pub fn section(&self, name: &str) -> &[Entry] {
        self.sections
            .get(&name.to_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Replaces `%key%` with its [Strings] value (case-insensitive); `%%` is a `%`.
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &after[..end];
            match self.string(key) {
                Some(v) => out.push_str(&v),
                None if key.is_empty() => out.push('%'),
                None => out.push_str(&rest[start..start + end + 2]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn string(&self, key: &str) -> Option<String> {
        self.sections
            .iter()
            .filter(|(n, _)| *n == "strings" || n.starts_with("strings."))
            .find_map(|(_, es)| {
                es.iter()
                    .find(|e| {
                        e.key
                            .as_deref()
                            .is_some_and(|k| k.eq_ignore_ascii_case(key))
                    })
                    .map(|e| e.values.join(","))
            })
    }

    /// First value of `key` in a section, expanded.
    pub fn get(&self, section: &str, key: &str) -> Option<String> {
        self.section(section)
            .iter()
            .find(|e| {
                e.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case(key))
            })
            .and_then(|e| e.values.first())
            .map(|v| self.expand(v))
    }

    /// Sections whose name is `base` or `base.<decoration>` (e.g. `.NTamd64`).
    fn decorated(&self, base: &str) -> Vec<&str> {
        let base = base.to_lowercase();
        let prefix = format!("{base}.");
        self.sections
            .keys()
            .filter(|n| **n == base || n.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    }

    /// Models sections named by [Manufacturer], with their decorations.
    fn models_sections(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.section("Manufacturer") {
            let mut vals = e.values.iter();
            let Some(base) = vals.next() else { continue };
            out.push(base.to_lowercase());
            for deco in vals {
                out.push(format!("{}.{}", base.to_lowercase(), deco.to_lowercase()));
            }
        }
        out.into_iter()
            .filter(|s| self.sections.contains_key(s))
            .collect()
    }

    /// Service name, binary, class and hardware IDs of the package.
    pub fn driver(&self) -> Result<InfDriver, InfError> {
        let mut hardware_ids = Vec::new();
        let mut installs = Vec::new();
        for models in self.models_sections() {
            for e in self.section(&models) {
                let mut vals = e.values.iter();
                if let Some(install) = vals.next() {
                    if !installs.contains(&install.to_lowercase()) {
                        installs.push(install.to_lowercase());
                    }
                }
                for id in vals.map(|v| self.expand(v)) {
                    if !id.is_empty()
                        && !hardware_ids
                            .iter()
                            .any(|h: &String| h.eq_ignore_ascii_case(&id))
                    {
                        hardware_ids.push(id);
                    }
                }
            }
        }
        if installs.is_empty() {
            return Err(InfError("no models in [Manufacturer]".into()));
        }
        let (service, svc_section) = installs
            .iter()
            .flat_map(|i| self.decorated(i))
            .filter(|s| s.ends_with(".services"))
            .flat_map(|s| self.section(s))
            .filter(|e| {
                e.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("AddService"))
            })
            .map(|e| {
                let flags = e
                    .values
                    .get(1)
                    .and_then(|f| parse_number(&self.expand(f)))
                    .unwrap_or(0);
                (flags & 0x2 != 0, e)
            })
            .max_by_key(|(assoc, _)| *assoc)
            .and_then(|(_, e)| {
                Some((
                    self.expand(e.values.first()?),
                    self.expand(e.values.get(2)?),
                ))
            })
            .ok_or_else(|| InfError("no AddService in the install sections".into()))?;
        let binary = self
            .get(&svc_section, "ServiceBinary")
            .ok_or_else(|| InfError(format!("no ServiceBinary in [{svc_section}]")))?;
        let binary = binary
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or(&binary)
            .to_owned();
        Ok(InfDriver {
            service,
            binary,
            class: self.get("Version", "Class"),
            class_guid: self.get("Version", "ClassGuid").map(|g| g.to_uppercase()),
            hardware_ids,
            start_type: self
                .get(&svc_section, "StartType")
                .and_then(|v| parse_number(&v)),
            load_order_group: self.get(&svc_section, "LoadOrderGroup"),
        })
    }
}

/// Parses INF bytes and extracts the driver in one step.
pub fn driver_from_bytes(bytes: &[u8]) -> Result<InfDriver, InfError> {
    parse(&decode(bytes))?.driver()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIOSTOR: &str = r#"; Copyright (c) Red Hat
[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%VENDOR%
CatalogFile=viostor.cat

[Manufacturer]
%VENDOR%=VirtioStor,NTamd64

[VirtioStor.NTamd64]
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\VEN_1AF4&DEV_1001
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01, PCI\VEN_1AF4&DEV_1042

[rhelscsi_inst.Services]
AddService = viostor, %SPSVCINST_ASSOCSERVICE%, rhelscsi_Service_Inst, Miniport_EventLog_Inst

[rhelscsi_Service_Inst]
ServiceType    = %SERVICE_KERNEL_DRIVER%
StartType      = %SERVICE_BOOT_START%
ErrorControl   = %SERVICE_ERROR_NORMAL%
ServiceBinary  = %12%\viostor.sys   ; the driver
LoadOrderGroup = SCSI miniport

[Strings]
SPSVCINST_ASSOCSERVICE = 0x00000002
SERVICE_KERNEL_DRIVER  = 1
SERVICE_BOOT_START     = 0
SERVICE_ERROR_NORMAL   = 1
VENDOR = "Red Hat, Inc."
RHELScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"
"#;

    #[test]
    fn parses_a_storage_driver() {
        let d = parse(VIOSTOR).unwrap().driver().unwrap();
        assert_eq!(d.service, "viostor");
        assert_eq!(d.binary, "viostor.sys");
        assert_eq!(d.class.as_deref(), Some("SCSIAdapter"));
        assert_eq!(
            d.class_guid.as_deref(),
            Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
        );
        assert_eq!(d.start_type, Some(0));
        assert_eq!(d.load_order_group.as_deref(), Some("SCSI miniport"));
        assert_eq!(
            d.hardware_ids,
            [
                "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
                "PCI\\VEN_1AF4&DEV_1001",
                "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
                "PCI\\VEN_1AF4&DEV_1042"
            ]
        );
    }

    #[test]
    fn decodes_utf16_with_bom_and_utf8() {
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(VIOSTOR.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(driver_from_bytes(&utf16).unwrap().service, "viostor");
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend_from_slice(VIOSTOR.as_bytes());
        assert_eq!(driver_from_bytes(&utf8).unwrap().service, "viostor");
        assert_eq!(decode(b"caf\xe9"), "café", "Latin-1 fallback");
    }

    #[test]
    fn syntax_table() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            // (section body, key, expected first value)
            ("[S]\nA = 1 ; c\n", "S", "A", Some("1")),
            ("[S]\nA = \"x;y\"\n", "S", "A", Some("x;y")),
            ("[s]\na=%X%\n[Strings]\nx=\"v\"\n", "S", "A", Some("v")),
            ("[S]\nA = one, \\\n two\n", "S", "A", Some("one")),
            ("[S]\nA = 100%%\n", "S", "A", Some("100%")),
            ("[S]\nA = %undefined%\n", "S", "A", Some("%undefined%")),
            ("[S]\n", "S", "A", None),
        ];
        for (text, sec, key, want) in cases {
            let inf = parse(text).unwrap();
            assert_eq!(inf.get(sec, key).as_deref(), *want, "{text:?}");
        }
        let inf = parse("[S]\nA = one, \\\n two\n").unwrap();
        assert_eq!(inf.section("s")[0].values, ["one", "two"]);
    }

    #[test]
    fn rejects_what_is_not_a_driver() {
        assert!(parse("A=1\n").is_err());
        assert!(parse("[S\n").is_err());
        assert_eq!(
            parse("[Version]\nClass=X\n")
                .unwrap()
                .driver()
                .unwrap_err()
                .0,
            "no models in [Manufacturer]"
        );
        let no_service = "[Manufacturer]\nM=Mod\n[Mod]\nd = inst, PCI\\VEN_1\n";
        assert!(parse(no_service).unwrap().driver().is_err());
    }
}
