//! Flag values with units: sizes (`256MiB`, `64KiB`, `1GB`) and durations
//! (`500ms`, `30s`, `7d`), and listen addresses (`localhost:8085`, `:8085`).
//! A bare number keeps the flag's old meaning (bytes, or milliseconds), so
//! every value that worked before still does.
//!
//! - sizes: `B`; `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `KB`, `MB`,
//!   `GB`, `TB` (powers of 1000, as disks are sold);
//! - durations: `ms`, `s`, `m`, `h`, `d`;
//!
//! units in any case, a space before them allowed, and a decimal point
//! (`1.5GiB`, `0.5s`) as long as the result is whole bytes or milliseconds.

use std::net::{SocketAddr, ToSocketAddrs};

const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// A size in bytes: `256MiB`, `1GB`, `4096`.
pub fn bytes(text: &str) -> Result<u64, String> {
    scaled(text, SIZE_UNITS, 1).map_err(|why| {
        format!("{why}; a size is a number of bytes or a number with a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB (e.g. 256MiB)")
    })
}

/// A duration in milliseconds: `500ms`, `30s`, `7d`, `100`.
pub fn millis(text: &str) -> Result<u64, String> {
    scaled(text, DURATION_UNITS, 1).map_err(|why| {
        format!("{why}; a duration is a number of milliseconds or a number with a unit: ms, s, m, h, d (e.g. 500ms, 30s, 7d)")
    })
}

/// `millis`, within `[min, max]` milliseconds.
pub fn millis_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let ms = millis(text)?;
        if ms < min || ms > max {
            return Err(format!("{ms} ms is not in {}..={}", show_millis(min), show_millis(max)));
        }
        Ok(ms)
    }
}

/// `HOST:PORT` (a name is resolved, its first address taken), or `:PORT`
/// for every IPv4 address (`0.0.0.0:PORT`).
pub fn listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT, IP:PORT or :PORT ({e})"))?
        .collect();
    // localhost often resolves to ::1 first; 127.0.0.1 is what every client tries.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A number, maybe with a fractional part, then maybe one of `units`
/// (bare: `bare_scale`), as a whole count of the smallest unit.
fn scaled(text: &str, units: &[(&str, u64)], bare_scale: u64) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let scale = match unit.as_str() {
        "" => bare_scale,
        unit => units
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| format!("unknown unit {unit:?} in {text:?}"))?,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 12 {
        return Err(format!("{text:?} is not a number"));
    }
    let too_large = || format!("{text:?} is too large");
    let whole: u64 = match whole {
        "" => 0,
        digits => digits.parse().map_err(|_| too_large())?,
    };
    let mut total = whole.checked_mul(scale).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let denominator = 10u128.pow(fraction.len() as u32);
        let numerator = fraction
            .parse::<u128>()
            .map_err(|_| format!("{text:?} is not a number"))?
            * scale as u128;
        if !numerator.is_multiple_of(denominator) {
            return Err(format!("{text:?} is not a whole number of the smallest unit"));
        }
        let part = u64::try_from(numerator / denominator).map_err(|_| too_large())?;
        total = total.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(total)
}

/// Milliseconds with the largest unit that divides them (for messages).
pub fn show_millis(ms: u64) -> String {
    DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, scale)| ms != 0 && ms.is_multiple_of(*scale))
        .map_or_else(|| format!("{ms}ms"), |(unit, scale)| format!("{}{unit}", ms / scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units_and_bare_bytes() {
        assert_eq!(bytes("4096"), Ok(4096));
        assert_eq!(bytes("256MiB"), Ok(256 << 20));
        assert_eq!(bytes("64KiB"), Ok(64 << 10));
        assert_eq!(bytes("64kib"), Ok(64 << 10));
        assert_eq!(bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(bytes("2 TiB"), Ok(2 << 40));
        assert_eq!(bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(bytes("10B"), Ok(10));
        assert_eq!(bytes("0"), Ok(0));
    }

    #[test]
    fn sizes_refuse_what_is_not_one() {
        for bad in [
            "",
            "lots",
            "12XB",
            "1.2.3MiB",
            "0.3B",
            "-1",
            "MiB",
            "99999999999999999999",
            "20000000TiB",
        ] {
            let why = bytes(bad).expect_err(bad);
            assert!(why.contains("e.g. 256MiB"), "{bad}: {why}");
        }
    }

    #[test]
    fn durations_take_units_and_bare_milliseconds() {
        assert_eq!(millis("100"), Ok(100));
        assert_eq!(millis("500ms"), Ok(500));
        assert_eq!(millis("30s"), Ok(30_000));
        assert_eq!(millis("0.5s"), Ok(500));
        assert_eq!(millis("2m"), Ok(120_000));
        assert_eq!(millis("1h"), Ok(3_600_000));
        assert_eq!(millis("7d"), Ok(7 * 86_400_000));
        assert_eq!(millis("7D"), Ok(7 * 86_400_000));
        assert!(millis("0.0001s").is_err(), "a tenth of a millisecond");
        assert!(millis("5 fortnights").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn bounded_durations_say_their_bounds() {
        let parse = millis_in(1, 3_600_000);
        assert_eq!(parse("5s"), Ok(5_000));
        assert_eq!(parse("1h"), Ok(3_600_000));
        assert_eq!(parse("0").unwrap_err(), "0 ms is not in 1ms..=1h");
        assert!(parse("2h").is_err());
    }

    #[test]
    fn durations_show_in_their_largest_unit() {
        assert_eq!(show_millis(604_800_000), "7d");
        assert_eq!(show_millis(1_500), "1500ms");
        assert_eq!(show_millis(30_000), "30s");
        assert_eq!(show_millis(0), "0ms");
    }

    #[test]
    fn listen_takes_names_and_a_bare_port() {
        assert_eq!(listen("127.0.0.1:8085"), Ok(SocketAddr::from(([127, 0, 0, 1], 8085))));
        assert_eq!(listen(":8085"), Ok(SocketAddr::from(([0, 0, 0, 0], 8085))));
        assert_eq!(listen("localhost:8085"), Ok(SocketAddr::from(([127, 0, 0, 1], 8085))));
        assert_eq!(listen("[::1]:8085"), Ok("[::1]:8085".parse().unwrap()));
        assert!(listen("nowhere").is_err());
        assert!(listen(":http").is_err());
    }
}
