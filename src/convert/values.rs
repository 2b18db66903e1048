//! nginx's time and size values (`ngx_parse_time`, `ngx_parse_size`) in the forms
//! fulcrum's config reads.

/// An nginx time (`90`, `500ms`, `1m30s`, `2h`, `1d`; no unit = seconds) as a fulcrum
/// duration string (`"90s"`, `"500ms"`); `None` when nginx would reject it.
pub fn time(s: &str) -> Option<String> {
    let mut total_ms: u64 = 0;
    let mut num: Option<u64> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let n = num.take()?;
        let mult: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            'M' => 30 * 86_400_000,
            'y' => 365 * 86_400_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(mult)?)?;
    }
    if let Some(n) = num {
        total_ms = total_ms.checked_add(n.checked_mul(1000)?)?;
    }
    if s.is_empty() {
        return None;
    }
    Some(if total_ms.is_multiple_of(1000) {
        format!("{}s", total_ms / 1000)
    } else {
        format!("{total_ms}ms")
    })
}

/// An nginx size (`512`, `10k`, `1m`, `1g`, either case) in bytes.
pub fn size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_nginx_reads_them() {
        assert_eq!(time("90").as_deref(), Some("90s"));
        assert_eq!(time("500ms").as_deref(), Some("500ms"));
        assert_eq!(time("1m30s").as_deref(), Some("90s"));
        assert_eq!(time("2h").as_deref(), Some("7200s"));
        assert_eq!(time("1s500ms").as_deref(), Some("1500ms"));
        assert_eq!(time("10x"), None);
        assert_eq!(time(""), None);
        assert_eq!(time("s"), None);
    }

    #[test]
    fn sizes_as_nginx_reads_them() {
        assert_eq!(size("512"), Some(512));
        assert_eq!(size("10k"), Some(10240));
        assert_eq!(size("1M"), Some(1 << 20));
        assert_eq!(size("2g"), Some(2 << 30));
        assert_eq!(size("1x"), None);
        assert_eq!(size(""), None);
    }
}
