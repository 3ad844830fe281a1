//! Lines for people on a serial console or a terminal: `<RFC 3339 UTC> <message>`, one per
//! line, no colour, no carriage returns (control characters become spaces).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 UTC with whole seconds.
pub fn now_rfc3339() -> String {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub struct Console<'a> {
    sink: &'a mut dyn FnMut(&str),
}

impl<'a> Console<'a> {
    pub fn new(sink: &'a mut dyn FnMut(&str)) -> Self {
        Console { sink }
    }

    /// One timestamped line per line of `text`.
    pub fn line(&mut self, text: &str) {
        let t = now_rfc3339();
        for l in text.lines() {
            (self.sink)(&format!("{t} {}", plain(l)));
        }
    }
}

/// `text` without control characters (no `\r`, no ANSI escapes).
pub fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_plain_and_timestamped() {
        let mut got = Vec::new();
        Console::new(&mut |l: &str| got.push(l.to_string())).line("one\r\x1b[Kred\ntwo");
        assert_eq!(got.len(), 2);
        assert!(
            got[0].ends_with(" one  [Kred") && got[1].ends_with(" two"),
            "{got:?}"
        );
        assert!(
            got[0].len() > 20 && got[0].as_bytes()[10] == b'T' && got[0].contains("Z "),
            "{got:?}"
        );
    }
}
