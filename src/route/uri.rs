//! stub
use std::borrow::Cow;
#[derive(Debug, thiserror::Error)]
#[error("bad path")]
pub struct BadPath;
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    Ok(Cow::Borrowed(path))
}
pub fn proxy_pass_target<'a>(
    uri_part: Option<&str>,
    location_prefix: &str,
    raw_target: &'a str,
    normalized: &str,
) -> Cow<'a, str> {
    match uri_part {
        None => Cow::Borrowed(raw_target),
        Some(u) => {
            let q = raw_target.find('?').map(|i| &raw_target[i..]).unwrap_or("");
            Cow::Owned(format!(
                "{}{}{}",
                u,
                &normalized[location_prefix.len().min(normalized.len())..],
                q
            ))
        }
    }
}
