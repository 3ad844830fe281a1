//! fnmatch(3)-style glob matching without flags, as kmod applies `modules.alias` patterns to a
//! device's modalias: `*` any run (also empty), `?` one byte, `[abc]`, `[a-z]`, `[!x]`/`[^x]`
//! classes (a `]` first in the class is literal; a `[` without a closing `]` is literal), `\x`
//! the literal `x`. `/` is not special. Linear in practice: one backtrack point (the last `*`).

/// Does `pattern` match all of `text`?
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (pat, s) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // After a `*`: where the pattern resumes and which text position the star has eaten up to.
    let mut star: Option<(usize, usize)> = None;
    while t < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        if let Some(len) = (p < pat.len()).then(|| one(&pat[p..], s[t])).flatten() {
            p += len;
            t += 1;
            continue;
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// If the single pattern element at the start of `pat` matches `c`, its length in the pattern.
fn one(pat: &[u8], c: u8) -> Option<usize> {
    match pat[0] {
        b'?' => Some(1),
        b'\\' if pat.len() > 1 => (pat[1] == c).then_some(2),
        b'[' => match class(pat, c) {
            Some((true, len)) => Some(len),
            Some((false, _)) => None,
            None => (c == b'[').then_some(1),
        },
        x => (x == c).then_some(1),
    }
}

/// Matches a `[...]` class at the start of `pat`: (matched, length), or `None` if unterminated.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let first = i;
    let mut hit = false;
    loop {
        let lo = *pat.get(i)?;
        if lo == b']' && i > first {
            return Some((hit != negate, i + 1));
        }
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = pat[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
}

/// The part of `pattern` before its first wildcard: a cheap pre-filter.
pub fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*b", "aXXb", true),
            ("a*b", "aXXbc", false),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "acb", false),
            ("*a*a*a*", "aaa", true),
            ("*a*a*a*", "aa", false),
            ("?", "x", true),
            ("?", "", false),
            ("??", "x", false),
            ("[abc]", "b", true),
            ("[abc]", "d", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "dx", true),
            ("[^a-c]x", "bx", false),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[a-]", "-", true),
            ("[", "[", true),
            ("[ab", "[ab", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("a/b*", "a/b/c", true),
            // Real modules.alias lines against real modalias strings.
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d00001041sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                false,
            ),
            (
                "pci:v00001AF4d*sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                true,
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
            ("virtio:d00000002v*", "virtio:d00000001v00001AF4", false),
            (
                "pci:v*d*sv*sd*bc01sc06i01*",
                "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
                true,
            ),
            ("acpi*:PNP0501:*", "acpi:PNP0501:", true),
            ("scsi:t-0x00*", "scsi:t-0x00", true),
            ("scsi:t-0x0[05]*", "scsi:t-0x05", true),
            (
                "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw",
                "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw",
                true,
            ),
        ];
        for (pat, text, want) in cases {
            assert_eq!(glob_match(pat, text), *want, "{pat:?} vs {text:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("pci:v00001AF4d*sv*"), "pci:v00001AF4d");
        assert_eq!(literal_prefix("virtio:d00000001v*"), "virtio:d00000001v");
        assert_eq!(literal_prefix("ext4"), "ext4");
        assert_eq!(literal_prefix("*x"), "");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_literals_match_themselves(p in "[a-c*?\\[\\]!^\\\\-]{0,12}", t in "[a-c\\[\\]-]{0,12}") {
            let _ = glob_match(&p, &t);
            let lit: String = t.chars().filter(|c| c.is_ascii_alphabetic()).collect();
            proptest::prop_assert!(glob_match(&lit, &lit));
            proptest::prop_assert!(glob_match("*", &t));
        }
    }
}
