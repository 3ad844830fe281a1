//! A small parser for LVM2's text metadata format (the VG metadata in a PV's metadata area and
//! `vgcfgbackup` files).
//!
//! ```text
//! file    := item*
//! item    := key '=' value | key '{' item* '}'
//! value   := string | number | '[' (scalar ','?)* ']'
//! scalar  := string | number
//! ```
//! Strings are `"..."` with backslash escapes or `'...'`; numbers follow `strtoll(_, 0)` (so
//! `0x` is hex and a leading `0` octal) or are floats when they contain a '.'; `#` starts a
//! comment to the end of the line. Input is hostile: sections nest at most [`MAX_DEPTH`] deep,
//! every error carries its line, and nothing allocates more than the input's size.

/// Deepest section nesting accepted (VG metadata uses 4).
pub const MAX_DEPTH: usize = 16;

/// A value on the right of `=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    /// A float, kept as written.
    Float(String),
    Str(String),
    List(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Value(Value),
    Section(Section),
}

/// A section's items in file order (keys may repeat; lookups take the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub items: Vec<(String, Node)>,
}

impl Section {
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.items.iter().find_map(|(k, n)| match n {
            Node::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    pub fn section(&self, key: &str) -> Option<&Section> {
        self.items.iter().find_map(|(k, n)| match n {
            Node::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// The subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, n)| match n {
            Node::Section(s) => Some((k.as_str(), s)),
            Node::Value(_) => None,
        })
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A syntax error and the line (1-based) it is on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TextError {
    pub line: u32,
    pub reason: String,
}

/// Parse a whole metadata text.
pub fn parse(text: &str) -> Result<Section, TextError> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
        line: 1,
    };
    let section = p.items(0)?;
    match p.next()? {
        None => Ok(section),
        Some(t) => Err(p.error(format!("unexpected {}", t.describe()))),
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    ListOpen,
    ListClose,
    Equals,
    Comma,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Str(_) => "a string".into(),
            Token::Open => "'{'".into(),
            Token::Close => "'}'".into(),
            Token::ListOpen => "'['".into(),
            Token::ListClose => "']'".into(),
            Token::Equals => "'='".into(),
            Token::Comma => "','".into(),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    line: u32,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> TextError {
        TextError {
            line: self.line,
            reason: reason.into(),
        }
    }

    /// Items until '}' (depth > 0, the '}' is consumed) or the end of input (depth 0).
    fn items(&mut self, depth: usize) -> Result<Section, TextError> {
        let mut section = Section::default();
        loop {
            let key = match self.next()? {
                None if depth == 0 => return Ok(section),
                None => return Err(self.error("unexpected end of text: a section is not closed")),
                Some(Token::Close) if depth > 0 => return Ok(section),
                Some(Token::Word(w)) => w,
                Some(t) => {
                    return Err(self.error(format!("expected a key, found {}", t.describe())))
                }
            };
            let node = match self.next()? {
                Some(Token::Equals) => Node::Value(self.value()?),
                Some(Token::Open) => {
                    if depth + 1 > MAX_DEPTH {
                        return Err(self.error(format!("sections nest deeper than {MAX_DEPTH}")));
                    }
                    Node::Section(self.items(depth + 1)?)
                }
                Some(t) => {
                    return Err(self.error(format!(
                        "expected '=' or '{{' after {key:?}, found {}",
                        t.describe()
                    )))
                }
                None => return Err(self.error(format!("unexpected end of text after {key:?}"))),
            };
            section.items.push((key, node));
        }
    }

    fn value(&mut self) -> Result<Value, TextError> {
        match self.next()? {
            Some(Token::ListOpen) => {
                let mut list = Vec::new();
                loop {
                    match self.next()? {
                        Some(Token::ListClose) => return Ok(Value::List(list)),
                        Some(Token::Comma) if !list.is_empty() => {}
                        Some(t @ (Token::Str(_) | Token::Word(_))) => list.push(self.scalar(t)?),
                        Some(t) => {
                            return Err(self.error(format!("unexpected {} in a list", t.describe())))
                        }
                        None => {
                            return Err(self.error("unexpected end of text: a list is not closed"))
                        }
                    }
                }
            }
            Some(t @ (Token::Str(_) | Token::Word(_))) => self.scalar(t),
            Some(t) => Err(self.error(format!("expected a value, found {}", t.describe()))),
            None => Err(self.error("unexpected end of text: a value is missing")),
        }
    }

    fn scalar(&self, t: Token) -> Result<Value, TextError> {
        match t {
            Token::Str(s) => Ok(Value::Str(s)),
            Token::Word(w) => {
                number(&w).ok_or_else(|| self.error(format!("{w:?} is not a number or a string")))
            }
            t => Err(self.error(format!("expected a value, found {}", t.describe()))),
        }
    }

    fn next(&mut self) -> Result<Option<Token>, TextError> {
        self.skip_space_and_comments();
        let Some(&c) = self.s.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        let t = match c {
            b'{' => Token::Open,
            b'}' => Token::Close,
            b'[' => Token::ListOpen,
            b']' => Token::ListClose,
            b'=' => Token::Equals,
            b',' => Token::Comma,
            b'"' | b'\'' => Token::Str(self.string(c)?),
            0 => return Err(self.error("unexpected NUL byte")),
            _ => {
                let start = self.at - 1;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|&c| !is_space(c) && !is_special(c))
                {
                    self.at += 1;
                }
                Token::Word(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
            }
        };
        Ok(Some(t))
    }

    fn string(&mut self, quote: u8) -> Result<String, TextError> {
        let start_line = self.line;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Err(TextError {
                    line: start_line,
                    reason: "unterminated string".into(),
                });
            };
            self.at += 1;
            match c {
                _ if c == quote => break,
                b'\\' if quote == b'"' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return Err(TextError {
                            line: start_line,
                            reason: "unterminated string".into(),
                        });
                    };
                    self.at += 1;
                    self.line += u32::from(e == b'\n');
                    out.push(e);
                }
                0 => return Err(self.error("NUL byte in a string")),
                _ => {
                    self.line += u32::from(c == b'\n');
                    out.push(c);
                }
            }
        }
        String::from_utf8(out).map_err(|_| TextError {
            line: start_line,
            reason: "string is not UTF-8".into(),
        })
    }

    fn skip_space_and_comments(&mut self) {
        while let Some(&c) = self.s.get(self.at) {
            if c == b'#' {
                while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                    self.at += 1;
                }
            } else if is_space(c) {
                self.line += u32::from(c == b'\n');
                self.at += 1;
            } else {
                break;
            }
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'{' | b'}' | b'[' | b']' | b'=' | b',' | b'"' | b'\'' | b'#' | 0
    )
}

/// `strtoll(word, 0)` for whole words, or a float when the word has a '.'.
fn number(w: &str) -> Option<Value> {
    if w.contains('.') {
        let digits = w.trim_start_matches(['+', '-']);
        let ok = !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && digits.matches('.').count() == 1;
        return ok.then(|| Value::Float(w.to_string()));
    }
    let (negative, rest) = match w.as_bytes().first()? {
        b'-' => (true, &w[1..]),
        b'+' => (false, &w[1..]),
        _ => (false, w),
    };
    let (radix, digits) =
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            (16, hex)
        } else if rest.len() > 1 && rest.starts_with('0') {
            (8, &rest[1..])
        } else {
            (10, rest)
        };
    if digits.is_empty() || !digits.bytes().all(|c| (c as char).is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok().map(Value::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VG: &str = r#"# Generated by LVM2
vg0 {
	id = "VMiv2Q-YqVE-ccS4-7xee-n5vH-EtTV-MGxafm"
	seqno = 3
	status = ["RESIZEABLE", "READ", "WRITE"]
	flags = []
	extent_size = 8192		# 4 Megabytes
	physical_volumes {
		pv0 {
			id = "tV4eqM-zhOh-uOak-0CJx-vAT3-FcRy-9edepm"
			device = "/dev/loop0"	# Hint only
		}
	}
	logical_volumes {
		root {
			segment1 {
				stripes = [
					"pv0", 0
				]
			}
		}
	}
}
contents = "Text Format Volume Group"
description = "say \"hi\" \\ there"
creation_time = 1795309402	# Sun Nov 22
"#;

    #[test]
    fn parses_vg_metadata() {
        let top = parse(VG).unwrap();
        assert_eq!(top.str("contents"), Some("Text Format Volume Group"));
        assert_eq!(top.str("description"), Some(r#"say "hi" \ there"#));
        assert_eq!(top.int("creation_time"), Some(1_795_309_402));
        let (name, vg) = top.sections().next().unwrap();
        assert_eq!(name, "vg0");
        assert_eq!(vg.int("extent_size"), Some(8192));
        assert_eq!(vg.value("flags"), Some(&Value::List(vec![])));
        let status = vg.value("status").unwrap();
        assert_eq!(
            status,
            &Value::List(
                ["RESIZEABLE", "READ", "WRITE"]
                    .map(|s| Value::Str(s.into()))
                    .to_vec()
            )
        );
        let seg = vg
            .section("logical_volumes")
            .unwrap()
            .section("root")
            .unwrap()
            .section("segment1")
            .unwrap();
        assert_eq!(
            seg.value("stripes"),
            Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0)]))
        );
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.str("device"), Some("/dev/loop0"));
    }

    #[test]
    fn numbers_follow_strtoll_base_0() {
        let t =
            parse("a = 0x10\nb = -12\nc = 010\nd = 1.5\ne = +7\nf = 0\nl = [1 2, 'x']").unwrap();
        assert_eq!(t.int("a"), Some(16));
        assert_eq!(t.int("b"), Some(-12));
        assert_eq!(t.int("c"), Some(8));
        assert_eq!(t.value("d"), Some(&Value::Float("1.5".into())));
        assert_eq!(t.int("e"), Some(7));
        assert_eq!(t.int("f"), Some(0));
        assert_eq!(
            t.value("l"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Str("x".into())
            ]))
        );
    }

    #[test]
    fn hostile_texts_are_errors_with_lines() {
        let cases: &[(&str, u32, &str)] = &[
            ("a = \"never closed\n\n", 1, "unterminated string"),
            ("a {\n b = 1\n", 3, "a section is not closed"),
            ("a = 1\n}", 2, "expected a key"),
            ("a = [1, [2]]", 1, "unexpected '['"),
            ("a = [1, 2", 1, "a list is not closed"),
            ("a = abc", 1, "is not a number"),
            ("a = 99999999999999999999", 1, "is not a number"),
            ("a = 1.2.3", 1, "is not a number"),
            ("a", 1, "unexpected end of text"),
            ("a = ", 1, "a value is missing"),
            ("= 1", 1, "expected a key"),
            ("a = [,]", 1, "unexpected ','"),
            ("a = \"x\\", 1, "unterminated string"),
            ("a = 1\0", 1, "NUL"),
            ("a { b = { } }", 1, "expected a value"),
        ];
        for &(text, line, reason) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "a {".repeat(100_000);
        let e = parse(&deep).unwrap_err();
        assert!(e.reason.contains("nest deeper than 16"), "{e}");
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        parse(&ok).unwrap();
        let too_deep = format!(
            "{}{}",
            "a {".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&too_deep).is_err());
        let brackets = "a = ".to_string() + &"[".repeat(100_000);
        assert!(parse(&brackets).is_err());
    }

    #[test]
    fn comments_and_quotes() {
        let t =
            parse("# only a comment\nk = 'a \\ \"b' # trailing\nm = \"#not a comment\"").unwrap();
        assert_eq!(
            t.str("k"),
            Some("a \\ \"b"),
            "single quotes have no escapes"
        );
        assert_eq!(t.str("m"), Some("#not a comment"));
        assert_eq!(t.items.len(), 2);
        assert!(parse("k = 'a' 'b'").is_err());
    }
}
