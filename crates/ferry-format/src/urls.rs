//! An appliance's address: one `https://` URL, or several separated by commas, the nodes of one
//! scaled-out appliance that share its store (docs/operations.md, "Several nodes"). Agents talk to
//! one node and move to the next when it cannot be reached.

use std::fmt;

/// Most nodes one address may list.
pub const MAX_NODES: usize = 16;

/// The URLs of an appliance's nodes, in the order they are tried: each `https://HOST[:PORT]`
/// with no trailing `/`, no two equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceUrls(Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL must start with https://")]
    NotHttps,
    #[error("the URL has no host or contains spaces")]
    NoHost,
    #[error("no URL given")]
    Empty,
    #[error("{0} is listed twice")]
    Duplicate(String),
    #[error("more than {MAX_NODES} URLs")]
    TooMany,
}

impl ApplianceUrls {
    /// `https://a:8443` or `https://a:8443,https://b:8443` (spaces around commas allowed).
    pub fn parse(text: &str) -> Result<ApplianceUrls, UrlError> {
        let mut urls: Vec<String> = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let rest = part.strip_prefix("https://").ok_or(UrlError::NotHttps)?;
            let url = &part[..part.len() - (rest.len() - rest.trim_end_matches('/').len())];
            let rest = rest.trim_end_matches('/');
            if rest.is_empty()
                || rest.starts_with('/')
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(UrlError::NoHost);
            }
            if urls.iter().any(|u| u == url) {
                return Err(UrlError::Duplicate(url.to_string()));
            }
            if urls.len() == MAX_NODES {
                return Err(UrlError::TooMany);
            }
            urls.push(url.to_string());
        }
        if urls.is_empty() {
            return Err(UrlError::Empty);
        }
        Ok(ApplianceUrls(urls))
    }

    pub fn urls(&self) -> &[String] {
        &self.0
    }

    pub fn first(&self) -> &str {
        &self.0[0]
    }
}

impl fmt::Display for ApplianceUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_urls_parse_and_print_back() {
        let one = ApplianceUrls::parse("https://10.0.2.2:8443/").expect("one");
        assert_eq!(one.urls(), ["https://10.0.2.2:8443"]);
        assert_eq!(one.to_string(), "https://10.0.2.2:8443");
        let two = ApplianceUrls::parse(" https://a:1, https://b:2/ ,").expect("two");
        assert_eq!(two.urls(), ["https://a:1", "https://b:2"]);
        assert_eq!(two.first(), "https://a:1");
        assert_eq!(ApplianceUrls::parse(&two.to_string()), Ok(two));
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert_eq!(
            ApplianceUrls::parse("https://a,http://b"),
            Err(UrlError::NotHttps)
        );
        assert_eq!(ApplianceUrls::parse("https://"), Err(UrlError::NoHost));
        assert_eq!(ApplianceUrls::parse("https://a b"), Err(UrlError::NoHost));
        assert_eq!(ApplianceUrls::parse(" , "), Err(UrlError::Empty));
        assert_eq!(
            ApplianceUrls::parse("https://a,https://a/"),
            Err(UrlError::Duplicate("https://a".into()))
        );
        let many: Vec<String> = (0..=MAX_NODES).map(|i| format!("https://n{i}")).collect();
        assert_eq!(
            ApplianceUrls::parse(&many.join(",")),
            Err(UrlError::TooMany)
        );
    }
}
