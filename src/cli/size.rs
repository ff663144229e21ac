//! Sizes on the command line: `8M`, `1G`, `512K`, `65536`, `4MiB`.

/// Parses a size with an optional binary suffix (K, M, G, T; `B`, `iB` allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (examples: 65536, 512K, 8M, 1G)"))?;
    let mult: u64 = match suffix.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("'{s}': unknown size suffix (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses a rate in bits per second with an optional decimal suffix (k, M, G, T)
/// and an optional trailing `bit`, `bps` or `b`: `800M`, `2.5G`, `100Mbit`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a rate in bits per second (examples: 800M, 2.5G, 100Mbit)");
    let t = s.trim();
    let t = t.strip_suffix("bit").or_else(|| t.strip_suffix("bps")).or_else(|| t.strip_suffix('b')).unwrap_or(t);
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1e0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        "t" | "T" => 1e12,
        _ => return Err(bad()),
    };
    let bits = n * mult;
    if !(8e3..=1e15).contains(&bits) {
        return Err(format!("'{s}': a rate must be between 8k and 1000T bits per second"));
    }
    Ok(bits as u64)
}

/// Renders bytes with a binary unit, e.g. `1.50 GiB`.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// Parses a duration: seconds, or a number with s, m, h or d.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b's') => (&t[..t.len() - 1], 1),
        Some(b'm') => (&t[..t.len() - 1], 60),
        Some(b'h') => (&t[..t.len() - 1], 3600),
        Some(b'd') => (&t[..t.len() - 1], 86_400),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("'{s}' is not a duration: use e.g. 3600, 90m, 12h or 7d"))?;
    n.checked_mul(mult).map(std::time::Duration::from_secs).ok_or_else(|| format!("'{s}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Ok(std::time::Duration::from_secs(3600)));
        assert_eq!(parse_duration("90m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(std::time::Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human(1536), "1.50 KiB");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("800M"), Ok(800_000_000));
        assert_eq!(parse_rate("2.5G"), Ok(2_500_000_000));
        assert_eq!(parse_rate("100Mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1gbps"), Ok(1_000_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("5X").is_err());
    }
}
