//! `<disk><size>`: a whole number with an optional SI or IEC unit, as Oz reads it.

/// Oz's message for a size it cannot read, kept word for word so users of Oz
/// recognise it.
pub const INVALID_DISK_SIZE: &str = "Invalid disk size; it must be specified as an integer size with an optional SI or IEC unit suffix, e.g. '10TB' or '16GiB'";

/// Why a disk size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskSizeError {
    #[error("{INVALID_DISK_SIZE}")]
    Invalid,
    #[error("Disk size is too large; it must be less than 16 EiB")]
    TooLarge,
    #[error("Disk size must be greater than zero")]
    Zero,
}

/// Parses a disk size into bytes, following Oz:
/// - spaces are ignored and case does not matter;
/// - no unit means GiB (templates from before units existed said `10` for 10 GiB);
/// - `G` and `T` alone mean GiB and TiB (an earlier Oz spelling);
/// - `B` is bytes, `kB`..`YB` are powers of 1000, `KiB`..`YiB` powers of 1024.
///
/// Unlike Oz, a size of zero is refused: no OS plugin can install onto it, and
/// saying so here is clearer than a failure deep inside a build.
pub fn parse_disk_size(text: &str) -> Result<u64, DiskSizeError> {
    let cleaned: String = text.trim().chars().filter(|c| *c != ' ').collect::<String>().to_ascii_lowercase();
    let digits_end = cleaned.find(|c: char| !c.is_ascii_digit()).unwrap_or(cleaned.len());
    let (number, unit) = cleaned.split_at(digits_end);
    if number.is_empty() {
        return Err(DiskSizeError::Invalid);
    }
    let factor = unit_factor(unit).ok_or(DiskSizeError::Invalid)?;
    // Leading zeros are harmless; the number itself may still be huge.
    let value: u128 = number.parse().map_err(|_| DiskSizeError::TooLarge)?;
    let bytes = value.checked_mul(factor).and_then(|b| u64::try_from(b).ok()).ok_or(DiskSizeError::TooLarge)?;
    if bytes == 0 {
        return Err(DiskSizeError::Zero);
    }
    Ok(bytes)
}

/// Bytes per unit, for a lowercased unit; `None` for an unknown unit.
fn unit_factor(unit: &str) -> Option<u128> {
    const PREFIXES: [char; 8] = ['k', 'm', 'g', 't', 'p', 'e', 'z', 'y'];
    match unit {
        "" | "g" => return Some(1 << 30),
        "t" => return Some(1 << 40),
        "b" => return Some(1),
        _ => {}
    }
    let mut chars = unit.chars();
    let prefix = chars.next()?;
    let power = PREFIXES.iter().position(|p| *p == prefix)? as u32 + 1;
    match chars.as_str() {
        "b" => Some(1000u128.pow(power)),
        "ib" => Some(1024u128.pow(power)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_disk_size("10"), Ok(10 << 30));
        assert_eq!(parse_disk_size("10G"), Ok(10 << 30));
        assert_eq!(parse_disk_size("2T"), Ok(2 << 40));
        assert_eq!(parse_disk_size("512B"), Ok(512));
        assert_eq!(parse_disk_size("10 kB"), Ok(10_000));
        assert_eq!(parse_disk_size("10KiB"), Ok(10_240));
        assert_eq!(parse_disk_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_disk_size("10TB"), Ok(10_000_000_000_000));
        assert_eq!(parse_disk_size("1EiB"), Ok(1 << 60));
        assert_eq!(parse_disk_size(" 3 mb \n"), Ok(3_000_000));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_disk_size("10K"), Err(DiskSizeError::Invalid));
        assert_eq!(parse_disk_size("GB"), Err(DiskSizeError::Invalid));
        assert_eq!(parse_disk_size("10XB"), Err(DiskSizeError::Invalid));
        assert_eq!(parse_disk_size("-1"), Err(DiskSizeError::Invalid));
        assert_eq!(parse_disk_size("0"), Err(DiskSizeError::Zero));
        assert_eq!(parse_disk_size("1ZB"), Err(DiskSizeError::TooLarge));
        assert_eq!(parse_disk_size("16EiB"), Err(DiskSizeError::TooLarge));
        assert_eq!(parse_disk_size("99999999999999999999999999999999999999999"), Err(DiskSizeError::TooLarge));
    }
}
