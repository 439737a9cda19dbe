//! `--from-time`: an RFC 3339 time, minutes or seconds optional
//! (`2026-12-01T10:00Z`, `2026-12-01T10:00:30.5+01:00`), or ms since the
//! Unix epoch; turned into ms since the epoch, as records are stamped.

/// Parses `--from-time`.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?} is not a time like 2026-12-01T10:00Z (or ms since the epoch)");
    let (date, rest) = text.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let mut parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(year)), Some(Some(month)), Some(Some(day))) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
    let (clock, zone) = rest.split_at(zone_at);
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
            sign * (h.parse::<i64>().map_err(|_| bad())? * 60 + m.parse::<i64>().map_err(|_| bad())?)
        }
    };
    let mut fields = clock.splitn(3, ':');
    let hour: i64 = fields.next().and_then(|h| h.parse().ok()).ok_or_else(bad)?;
    let minute: i64 = fields.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
    let second: f64 = match fields.next() {
        Some(s) => s.parse().map_err(|_| bad())?,
        None => 0.0,
    };
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0.0..61.0).contains(&second);
    if !valid {
        return Err(bad());
    }
    let minutes = (days_from_civil(year, month, day) * 24 + hour) * 60 + minute - offset_minutes;
    let ms = minutes * 60_000 + (second * 1000.0).round() as i64;
    u64::try_from(ms).map_err(|_| format!("{text:?} is before 1970"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_utc_and_with_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-12-01T10:00Z"), Ok(1_796_119_200_000));
        assert_eq!(parse_time("2026-12-01T11:00:00.5+01:00"), Ok(1_796_119_200_500));
        assert_eq!(parse_time("1796119200000"), Ok(1_796_119_200_000));
        assert!(parse_time("2026-13-01T10:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
